"""WordPieceTokenizer against HF's fast tokenizer (`tokenizers`) token for token; every known difference pinned."""

import csv
import importlib.util
import unicodedata

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from npminilm.tokenization import _unicode_quirks as quirks
from npminilm.errors import InvalidArgumentError
from npminilm.tokenization.wordpiece import WordPieceTokenizer
from tests.conftest import ROOT

SURROGATES = range(0xD800, 0xE000)
CODE_POINTS = [cp for cp in range(0x110000) if cp not in SURROGATES]
CI = settings(max_examples=300, deadline=None, derandomize=True)


@pytest.fixture(scope="module")
def ours(model_dir):
    return WordPieceTokenizer.from_folder(model_dir)


def _hf(model_dir) -> Tokenizer:
    # tokenizer.json bakes in truncation to 128 and fixed padding to 128; the parity target has neither.
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


@pytest.fixture(scope="module")
def hf(model_dir):
    return _hf(model_dir)


@pytest.fixture(scope="module")
def hf_truncating(model_dir):
    return _hf(model_dir)


def as_crate_sees_it(text: str) -> str:
    """The crate cannot take lone surrogates; we drop them as "other", which is what it does with NUL."""
    return "".join("\x00" if ord(ch) in SURROGATES else ch for ch in text)


# ---- Hypothesis: a wide alphabet ------------------------------------------------------------------------


def _chars(lo: int, hi: int):
    return st.integers(lo, hi).map(chr)


_QUIRKY = sorted(
    quirks.OTHER_FLIPS | quirks.PUNCT_FLIPS | quirks.MN_FLIPS | quirks.NFD_STARTERS | set(quirks.LOWERCASE)
)
PIECES = st.one_of(
    _chars(0x20, 0x7E),  # ASCII
    st.sampled_from(list("\t\n\r\x00\x07\x0b\x0c\x1c\x1f\x7f\x85\xa0\xad\u1680\u180e\u2000\u2003\u200a\u200b\u200c"
                         "\u200d\u2028\u2029\u202f\u205f\u2060\u3000\ufeff\ufffd\ue000\U000f0000")),  # spaces, controls
    _chars(0xC0, 0x24F),  # Latin
    _chars(0x370, 0x3FF),  # Greek
    _chars(0x400, 0x4FF),  # Cyrillic
    _chars(0x4E00, 0x9FFF),  # CJK
    _chars(0x3040, 0x30FF),  # kana
    _chars(0xAC00, 0xD7A3),  # Hangul
    _chars(0x600, 0x6FF),  # Arabic
    _chars(0x900, 0x97F),  # Devanagari
    _chars(0x1F300, 0x1FAFF),  # emoji
    _chars(0x300, 0x36F),  # combining marks
    _chars(0x2B800, 0x2B9FF),  # around the crate's odd CJK range start
    _chars(0x0, 0x10FFFF).filter(lambda ch: ord(ch) not in SURROGATES),  # anything, unassigned included
    st.sampled_from([chr(cp) for cp in _QUIRKY]),  # every known Unicode-version difference
    _chars(0xD800, 0xDFFF),  # lone surrogates
    st.sampled_from(["[SEP]", "[CLS]", "[PAD]", "[UNK]", "[MASK]", "[sep]", "[SEP", "SEP]", "[[SEP]]", "##", "##ing",
                     "İ", "ß", "ﬁ", "ΣΑΣ", "Ⅻ", "\U0001d16d\U0001d165", "e\u0301", "\u1100\u1161\u11a8", " ",
                     "unbelievably", "x" * 101, "hello", "world", "don't", "U.S.A."]),
)
TEXTS = st.lists(PIECES, max_size=60).map("".join)


@CI
@given(text=TEXTS)
def test_single_text_parity(ours, hf, text):
    theirs = hf.encode(as_crate_sees_it(text))
    assert ours.encode(text) == theirs.ids
    assert ours.tokenize(text) == theirs.tokens[1:-1]
    bare = hf.encode(as_crate_sees_it(text), add_special_tokens=False)
    assert ours.encode(text, add_special_tokens=False) == bare.ids


@CI
@given(text=TEXTS, pair=TEXTS)
def test_pair_parity(ours, hf, text, pair):
    theirs = hf.encode(as_crate_sees_it(text), as_crate_sees_it(pair))
    batch = ours.batch_encode([text], [pair])
    assert batch["input_ids"][0].tolist() == theirs.ids
    assert batch["token_type_ids"][0].tolist() == theirs.type_ids
    assert ours.encode(text, pair) == theirs.ids


@CI
@given(text=TEXTS, pair=st.none() | TEXTS, max_length=st.integers(3, 40))
def test_truncation_parity(ours, hf_truncating, text, pair, max_length):
    hf_truncating.enable_truncation(max_length, strategy="longest_first")
    theirs = hf_truncating.encode(as_crate_sees_it(text), None if pair is None else as_crate_sees_it(pair))
    assert ours.encode(text, pair, max_length=max_length) == theirs.ids
    crate_pair = None if pair is None else as_crate_sees_it(pair)
    bare = hf_truncating.encode(as_crate_sees_it(text), crate_pair, add_special_tokens=False)
    assert ours.encode(text, pair, add_special_tokens=False, max_length=max_length) == bare.ids
    if pair is None:
        hf_truncating.enable_truncation(max_length - 1, strategy="longest_first")
        assert ours.encode(text, max_length=max_length - 1) == hf_truncating.encode(as_crate_sees_it(text)).ids


@pytest.fixture(scope="module")
def hf_padding(model_dir, ours):
    tok = _hf(model_dir)
    tok.enable_padding(pad_id=ours.pad_token_id, pad_token=ours.pad_token)
    return tok


@CI
@given(texts=st.lists(TEXTS, max_size=6), max_length=st.none() | st.integers(3, 30))
def test_batch_parity(ours, hf_padding, texts, max_length):
    if max_length is None:
        hf_padding.no_truncation()
    else:
        hf_padding.enable_truncation(max_length, strategy="longest_first")
    batch = ours.batch_encode(texts, max_length=max_length)
    if not texts:
        assert all(batch[name].shape == (0, 0) for name in batch)
        return
    theirs = hf_padding.encode_batch([as_crate_sees_it(t) for t in texts])
    for name, field in (("input_ids", "ids"), ("attention_mask", "attention_mask"), ("token_type_ids", "type_ids")):
        assert batch[name].tolist() == [getattr(e, field) for e in theirs], name


# ---- corpora ------------------------------------------------------------------------------------------------


def _stsb(data_dir) -> list[tuple[str, str]]:
    pairs = []
    for split in ("train", "dev", "test"):
        with open(data_dir / "stsb" / f"stsb-en-{split}.csv", newline="", encoding="utf-8") as f:
            pairs += [(row[0], row[1]) for row in csv.reader(f)]
    return pairs


def _mismatches(ours, hf, texts) -> list[str]:
    theirs = hf.encode_batch(texts)
    return [text for text, e in zip(texts, theirs) if ours.encode(text) != e.ids]


def test_stsb_every_sentence(ours, hf, data_dir):
    pairs = _stsb(data_dir)
    assert len(pairs) == 8628
    sentences = [s for pair in pairs for s in pair]
    assert _mismatches(ours, hf, sentences) == []


def test_stsb_pairs_with_and_without_truncation(ours, model_dir, data_dir):
    pairs = _stsb(data_dir)
    for max_length in (None, 16, 27):
        hf = _hf(model_dir)
        if max_length is not None:
            hf.enable_truncation(max_length, strategy="longest_first")
        theirs = hf.encode_batch(pairs)
        bad = [p for p, e in zip(pairs, theirs) if ours.encode(*p, max_length=max_length) != e.ids]
        assert bad == [], max_length


def test_tiny_shakespeare_every_line(ours, hf, data_dir):
    lines = (data_dir / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8").split("\n")
    assert len(lines) > 40000
    assert _mismatches(ours, hf, lines) == []


# ---- every code point ----------------------------------------------------------------------------------------

# Each template puts the code point somewhere the crate's rules bite: between letters (dropped? punctuation?),
# alone after a space (a mark with nothing to attach to), between two marks NFD swaps (a starter stops it).
TEMPLATES = ["a{}b", "{}", "A{}\u0316\U0001d16d{}\U0001d165\u0301Z"]


@pytest.mark.parametrize("template", TEMPLATES)
def test_every_code_point_normalizes_and_splits_alike(ours, hf, template):
    bad = []
    for start in range(0, len(CODE_POINTS), 512):
        cps = CODE_POINTS[start : start + 512]
        text = " ".join(template.format(chr(cp), chr(cp)) for cp in cps)
        normalized = hf.normalizer.normalize_str(text)
        words = [w for w, _ in hf.pre_tokenizer.pre_tokenize_str(normalized)]
        if ours.normalize(text) != normalized or ours.pre_tokenize(text) != words:
            bad += [cp for cp in cps if _one_differs(ours, hf, template.format(chr(cp), chr(cp)))]
    assert [f"U+{cp:04X}" for cp in bad] == []


def _one_differs(ours, hf, text) -> bool:
    normalized = hf.normalizer.normalize_str(text)
    return ours.normalize(text) != normalized or ours.pre_tokenize(text) != [
        w for w, _ in hf.pre_tokenizer.pre_tokenize_str(normalized)
    ]


def test_every_code_point_encodes_alike(ours, hf):
    chunks = [CODE_POINTS[i : i + 256] for i in range(0, len(CODE_POINTS), 256)]
    texts = [" ".join(f"a{chr(cp)}b {chr(cp)}" for cp in chunk) for chunk in chunks]
    assert _mismatches(ours, hf, texts) == []


# ---- the known differences, pinned -----------------------------------------------------------------------------


def test_quirk_tables_match_the_installed_tokenizers():
    spec = importlib.util.spec_from_file_location("unicode_quirks_tool", ROOT / "tools" / "unicode_quirks.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    generated = tool.render(*tool.sweep())
    assert (ROOT / "npminilm" / "tokenization" / "_unicode_quirks.py").read_text(encoding="utf-8") == generated, (
        "tokenizers' Unicode tables changed: run `python tools/unicode_quirks.py` and update the docstring of "
        "npminilm/tokenization/wordpiece.py"
    )


def test_quirk_table_sizes_are_the_documented_ones():
    # The counts quoted in npminilm/tokenization/wordpiece.py's docstring.
    assert len(quirks.OTHER_FLIPS) == 13
    assert len(quirks.WHITESPACE_FLIPS) == 0
    assert len(quirks.PUNCT_FLIPS) == 106
    assert len(quirks.MN_FLIPS) == 385
    assert len(quirks.NFD_STARTERS) == 99
    assert len(quirks.LOWERCASE) == 55
    assert sum(unicodedata.category(chr(cp)) == "Cn" for cp in CODE_POINTS) == 829834


# (text, what plain unicodedata rules would give, why the crate differs)
KNOWN = [
    ("a\u0378b", "ab", "unassigned (Cn) is kept: the crate's Cn table is empty"),
    ("a\u0890b", "ab", "U+0890 is Cf in Unicode 14, unknown to the crate: kept"),
    ("a\u2e43b", "a \u2e43 b", "U+2E43 is Po in Unicode 14, unknown to the crate: not punctuation"),
    ("a\u166db", "a\u166db", "U+166D is So in Unicode 14, Po in the crate: punctuation"),
    ("a\U000111c9b", "ab", "U+111C9 is Mn in Unicode 14, Po in the crate: punctuation, not stripped"),
    ("a\u0898b", "ab", "U+0898 is Mn in Unicode 14, unknown to the crate: not stripped"),
    ("a\u1734b", "a\u1734b", "U+1734 is Mc in Unicode 14, Mn in the crate: stripped"),
    ("a\U00011938b", "a\U00011935\U00011930b", "U+11938 decomposes in Unicode 14, not in the crate"),
    ("x\U0001d16d\u07fd\U0001d165", "x\U0001d165\U0001d16d", "U+07FD's class is unknown to the crate: a starter"),
    ("a\U00010d50b", "a\U00010d50b", "Rust's std lower-cases U+10D50, unassigned in Python 3.11"),
]


@pytest.mark.parametrize("text, naive, why", KNOWN, ids=[k[2].split(":")[0] for k in KNOWN])
def test_known_unicode_differences(ours, hf, text, naive, why):
    normalized = hf.normalizer.normalize_str(text)
    words = [w for w, _ in hf.pre_tokenizer.pre_tokenize_str(normalized)]
    assert ours.normalize(text) == normalized, why
    assert ours.pre_tokenize(text) == words, why
    assert " ".join(words) != naive, f"no longer a difference: {why}"
    assert ours.encode(text) == hf.encode(text).ids


def test_lone_surrogates_cannot_reach_the_crate(ours, hf):
    with pytest.raises(Exception):
        hf.encode("a\ud800b")
    assert ours.encode("a\ud800b") == hf.encode("ab").ids


def test_max_length_below_the_special_tokens(ours, model_dir):
    hf = _hf(model_dir)
    hf.enable_truncation(1)
    # The crate computes max_length - 2 in unsigned arithmetic, wraps, and does not truncate at all.
    assert len(hf.encode("a b c d").ids) == 6
    with pytest.raises(InvalidArgumentError):
        ours.encode("a b c d", max_length=1)
    hf.enable_truncation(2)
    assert hf.encode("a b c d", "e").ids == _hf(model_dir).encode("a b c d", "e").ids
    with pytest.raises(InvalidArgumentError):
        ours.encode("a b c d", "e", max_length=2)


def test_added_tokens_come_from_tokenizer_json(ours, hf):
    added = {t.content: i for i, t in hf.get_added_tokens_decoder().items()}
    assert ours.added_tokens == added
    assert np.array_equal(ours.convert_tokens_to_ids(list(added)), list(added.values()))


def test_decode_parity(ours, hf):
    for text in ["Open-source LLMs rock.", "I don't think it's 5.0 , you ' re sure?", "[SEP] Ça va? 東京 x ##y"]:
        ids = hf.encode(text).ids
        assert ours.decode(ids) == hf.decode(ids)
        assert ours.decode(ids, skip_special_tokens=False) == hf.decode(ids, skip_special_tokens=False)
