"""WordPieceTokenizer behaviour worked out by hand from the BERT rules, with no oracle library."""

import json
import random
import shutil

import numpy as np
import pytest

from npminilm.errors import InvalidArgumentError, InvalidInputError, ModelNotFoundError, TokenizerError
from npminilm.tokenization.wordpiece import WordPieceTokenizer, _longest_first

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# A vocabulary small enough to work every expected answer out by hand.
TINY = SPECIALS + ["un", "##aff", "##able", "aff", "a", "##a", "b", "##b", "x", "!", ",", "-", "[", "]", "sep",
                   "ab", "cafe", "ecole", "οδοσ", "ς", "i", "中", "文", "abc", "$", "5", "«", "»", "a±b"]


@pytest.fixture(scope="module")
def tiny():
    return WordPieceTokenizer({t: i for i, t in enumerate(TINY)})


@pytest.fixture(scope="module")
def tok(model_dir):
    return WordPieceTokenizer.from_folder(model_dir)


# ---- WordPiece ------------------------------------------------------------------------------------------


def test_greedy_longest_match_from_the_left(tiny):
    # "unaffable": longest prefix in the vocab is "un", then "##aff", then "##able".
    assert tiny.tokenize("unaffable") == ["un", "##aff", "##able"]


def test_unmatchable_rest_turns_the_whole_word_into_unk(tiny):
    # "un ##aff ##able" match, but nothing matches "##x": the crate gives up on the word, not just the rest.
    assert tiny.tokenize("unaffablex ab") == ["[UNK]", "ab"]


def test_word_length_limit_is_100_chars(tiny):
    assert tiny.tokenize("a" * 100) == ["a"] + ["##a"] * 99
    assert tiny.tokenize("a" * 101) == ["[UNK]"]
    assert tiny.tokenize("a" * 101 + " b") == ["[UNK]", "b"]


def test_hand_worked_sentence(tok):
    # "open-source" splits at the ASCII hyphen; "llms" is not in the vocab, its longest prefix is "ll",
    # and "##ms" covers the rest; "." is isolated.
    tokens = ["[CLS]", "open", "-", "source", "ll", "##ms", "rock", ".", "[SEP]"]
    assert tok.encode("Open-source LLMs rock.") == [tok.vocab[t] for t in tokens]
    assert tok.tokenize("Open-source LLMs rock.") == tokens[1:-1]


# ---- BertNormalizer ------------------------------------------------------------------------------------


def test_accents_are_stripped_before_lowercasing(tiny):
    assert tiny.normalize("Café ÉCOLE") == "cafe ecole"
    # İ is I + U+0307 under NFD; the dot is Mn and goes before lower-casing could turn İ into "i̇".
    assert tiny.normalize("İ") == "i"


def test_lowercasing_is_per_char_with_no_final_sigma(tiny):
    # str.lower would give "οδος"; the crate lower-cases each char on its own.
    assert tiny.normalize("ΟΔΟΣ") == "οδοσ"
    assert tiny.tokenize("ΟΔΟΣ") == ["οδοσ"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("\x00a\ufffdb\x07", "ab"),  # NUL, U+FFFD and controls are dropped
        ("a\x0bb\x0cc", "abc"),  # \v and \f are controls before they are whitespace
        ("a\x1cb\x1fc", "abc"),  # str.isspace says space; Rust says control
        ("a\u200bb\ufeffc", "abc"),  # zero-width space and BOM are Cf
        ("a\x85b", "ab"),  # NEL is White_Space but Cc, and the control filter runs first
        ("a\tb\nc\rd", "a b c d"),
        ("a\u00a0b\u2003c\u3000d\u2028e\u2029f", "a b c d e f"),
        ("a\ue000b", "ab"),  # private use is Co
        ("a\u0378b", "a\u0378b"),  # unassigned (Cn) is kept: the crate's Cn table is empty
    ],
)
def test_clean_text(tiny, text, expected):
    assert tiny.normalize(text) == expected


def test_cjk_ideographs_are_spaced_but_kana_is_not(tiny):
    assert tiny.pre_tokenize("中文abc") == ["中", "文", "abc"]
    # Kana stay one word; が is か + U+3099 under NFD, and U+3099 is Mn, so it goes with the accents.
    assert tiny.pre_tokenize("ひらがな") == ["ひらかな"]
    # The crate's fifth CJK range starts at U+2B920, so U+2B820 stays inside its word.
    assert tiny.pre_tokenize("a\U0002b820b\U0002b920c") == ["a\U0002b820b", "\U0002b920", "c"]


@pytest.mark.parametrize(
    "text, words",
    [
        ("a,b", ["a", ",", "b"]),
        ("$5", ["$", "5"]),  # ASCII punctuation includes symbols like $ (Sc), + (Sm), ` (Sk)
        ("«x»", ["«", "x", "»"]),  # P* outside ASCII
        ("a±b", ["a±b"]),  # Sm outside ASCII is not punctuation
        ("a--b", ["a", "-", "-", "b"]),  # each punctuation char alone
    ],
)
def test_punctuation_is_isolated(tiny, text, words):
    assert tiny.pre_tokenize(text) == words


@pytest.mark.parametrize(
    "text, expected, why",
    [
        ("a\u0890b", "a\u0890b", "U+0890 is Cf in Unicode 14, unknown to the crate's tables: kept"),
        ("a\u0898b", "a\u0898b", "U+0898 is Mn in Unicode 14, unknown to the crate's tables: not stripped"),
        ("a\u1734b", "ab", "U+1734 is Mc in Unicode 14 but Mn in the crate's tables: stripped"),
        ("\U00011938", "\U00011938", "U+11938 decomposes in Unicode 14, not in the crate's tables"),
        ("\U00010d50", "\U00010d70", "Rust's std lower-cases U+10D50, unassigned in Python 3.11"),
    ],
)
def test_known_unicode_version_differences_follow_the_crate(tiny, text, expected, why):
    assert tiny.normalize(text) == expected, why


@pytest.mark.parametrize(
    "text, words, why",
    [
        ("a\u2e43b", ["a\u2e43b"], "U+2E43 is Po in Unicode 14, unknown to the crate: not punctuation"),
        ("a\u166db", ["a", "\u166d", "b"], "U+166D is So in Unicode 14, Po in the crate's tables"),
    ],
)
def test_known_punctuation_differences_follow_the_crate(tiny, text, words, why):
    assert tiny.pre_tokenize(text) == words, why


def test_unknown_combining_class_blocks_reordering(tiny):
    # U+1D16D (ccc 226) then U+1D165 (ccc 216) swap under NFD; U+07FD (ccc 220 in Unicode 14) is a starter
    # in the crate's tables, so nothing moves across it (and it is not stripped either).
    assert tiny.normalize("x\U0001d16d\U0001d165") == "x\U0001d165\U0001d16d"
    assert tiny.normalize("x\U0001d16d\u07fd\U0001d165") == "x\U0001d16d\u07fd\U0001d165"


def test_lone_surrogates_are_dropped_like_controls(tiny):
    assert tiny.tokenize("a\ud800b \udfff") == ["ab"]
    assert tiny.batch_encode(["\udc00"])["input_ids"].tolist() == [[2, 3]]


def test_options_off(tiny):
    cased = WordPieceTokenizer({t: i for i, t in enumerate(TINY)}, do_lower_case=False, tokenize_chinese_chars=False)
    # Without lower-casing, strip_accents=None means no stripping either, as in the crate.
    assert cased.normalize("Café 中文") == "Café 中文"
    stripped = WordPieceTokenizer({t: i for i, t in enumerate(TINY)}, do_lower_case=False, strip_accents=True)
    assert stripped.normalize("Café") == "Cafe"


# ---- special tokens, pairs, truncation -----------------------------------------------------------------


def test_special_tokens_are_matched_whole_on_the_raw_text(tiny):
    assert tiny.tokenize("a [SEP] b") == ["a", "[SEP]", "b"]
    assert tiny.tokenize("x[SEP]b[CLS]") == ["x", "[SEP]", "b", "[CLS]"]
    # Matching is case-sensitive and before normalisation: these are ordinary text.
    assert tiny.tokenize("[sep]") == ["[", "sep", "]"]
    assert tiny.tokenize("[SE\x00P]") == ["[", "sep", "]"]


def test_single_and_pair_layout(tiny):
    ids = tiny.encode("ab", "b a")
    assert tiny.convert_ids_to_tokens(ids) == ["[CLS]", "ab", "[SEP]", "b", "a", "[SEP]"]
    batch = tiny.batch_encode(["ab"], ["b a"])
    assert batch["token_type_ids"].tolist() == [[0, 0, 0, 1, 1, 1]]
    assert tiny.encode("ab", add_special_tokens=False) == [TINY.index("ab")]


def test_truncation_single(tiny):
    assert tiny.convert_ids_to_tokens(tiny.encode("a b x ab", max_length=4)) == ["[CLS]", "a", "b", "[SEP]"]
    assert tiny.encode("a b", max_length=2) == [2, 3]
    assert tiny.encode("a b x", add_special_tokens=False, max_length=2) == [TINY.index("a"), TINY.index("b")]


@pytest.mark.parametrize(
    "n1, n2, max_length, kept",
    [
        (10, 3, 11, (5, 3)),  # budget 8: the short side keeps all 3, the long one gets the other 5
        (3, 10, 11, (3, 5)),
        (10, 10, 10, (3, 4)),  # budget 7, equal lengths: no swap, the second gets the odd token
        (11, 10, 10, (4, 3)),  # budget 7: the odd token goes to the longer, here the first
        (10, 11, 10, (3, 4)),
        (5, 4, 10, (4, 3)),  # budget 7: short side 4 > 7 // 2, so both are halved
        (10, 10, 11, (4, 4)),
        (2, 2, 3, (0, 0)),  # budget 0
        (1, 1, 50, (1, 1)),
    ],
)
def test_truncation_pair_is_longest_first(tiny, n1, n2, max_length, kept):
    ids = tiny.encode(" ".join(["a"] * n1), " ".join(["b"] * n2), max_length=max_length)
    a, b = TINY.index("a"), TINY.index("b")
    assert ids == [2] + [a] * kept[0] + [3] + [b] * kept[1] + [3]


def test_max_length_errors(tiny):
    with pytest.raises(InvalidArgumentError):
        tiny.encode("a", max_length=1)
    with pytest.raises(InvalidArgumentError):
        tiny.encode("a", "b", max_length=2)
    with pytest.raises(InvalidInputError):
        tiny.encode("a", max_length=3.0)
    with pytest.raises(InvalidInputError):
        tiny.encode("a", max_length=True)


def test_truncating_a_long_text_gives_the_head_of_the_full_encoding(tiny):
    # Truncation stops tokenising early; it must land exactly where cutting the full encoding lands.
    rng = random.Random(0)
    pieces = ["a", "b", "ab", " ", " ", "\t", ",", "-", "é", "中", "\u0301", "\U0001d165", "\x00", "[SEP]", "xx"]
    for _ in range(30):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 30000)))
        pair = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 30000)))
        full, full_pair = tiny.encode(text, add_special_tokens=False), tiny.encode(pair, add_special_tokens=False)
        for max_length in (3, 4, 17, 300, 5001, 10**7):
            expected = [2, *full[: max_length - 2], 3]
            assert tiny.encode(text, max_length=max_length) == expected
            n1, n2 = _longest_first(len(full), len(full_pair), max_length - 3)
            assert tiny.encode(text, pair, max_length=max_length) == [2, *full[:n1], 3, *full_pair[:n2], 3]


def test_one_megabyte_with_max_length_stops_reading_early(tok, monkeypatch):
    text = ("Tokenizers should not read all of this. Ça va très bien, 東京. " * 20000)[:1_000_000]
    normalized = []
    real_normalize = type(tok)._normalize
    monkeypatch.setattr(type(tok), "_normalize", lambda self, seg: normalized.append(len(seg)) or real_normalize(self, seg))
    ids = tok.encode(text, max_length=256)
    assert len(ids) == 256 and ids[-1] == tok.sep_token_id
    assert ids == tok.encode(text[:5000], max_length=256)
    # a complexity check, not a timing: truncation must stop early, never normalise the whole megabyte
    assert sum(normalized) < 100_000, sum(normalized)


# ---- batches ----------------------------------------------------------------------------------------------


def test_batch_padding_shape_and_dtype(tiny):
    batch = tiny.batch_encode(["a", "a b ab", ""])
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        assert batch[name].dtype == np.int64 and batch[name].shape == (3, 5)
    a, b, ab = TINY.index("a"), TINY.index("b"), TINY.index("ab")
    assert batch["input_ids"].tolist() == [[2, a, 3, 0, 0], [2, a, b, ab, 3], [2, 3, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert not batch["token_type_ids"].any()


def test_empty_batch(tiny):
    batch = tiny.batch_encode([])
    assert all(batch[k].shape == (0, 0) and batch[k].dtype == np.int64 for k in batch)


def test_batch_without_padding(tiny):
    batch = tiny.batch_encode(["a", "a b"], padding=False)
    a, b = TINY.index("a"), TINY.index("b")
    assert [row.tolist() for row in batch["input_ids"]] == [[2, a, 3], [2, a, b, 3]]
    assert [row.tolist() for row in batch["attention_mask"]] == [[1, 1, 1], [1, 1, 1, 1]]


def test_batch_truncation(tiny):
    batch = tiny.batch_encode(["a a a a a", "a"], max_length=4)
    a = TINY.index("a")
    assert batch["input_ids"].tolist() == [[2, a, a, 3], [2, a, 3, 0]]


# ---- ids <-> tokens ------------------------------------------------------------------------------------


def test_convert_and_decode(tok):
    ids = tok.encode("Open-source LLMs rock.")
    tokens = tok.convert_ids_to_tokens(ids)
    assert tok.convert_tokens_to_ids(tokens) == ids
    assert tok.convert_ids_to_tokens(ids[1]) == tokens[1] == "open"
    assert tok.convert_tokens_to_ids("no-such-token") == tok.unk_token_id
    # Special tokens skipped, "##" glued on, the space before "." removed by the cleanup rules.
    assert tok.decode(ids) == "open - source llms rock."
    assert tok.decode(ids, skip_special_tokens=False) == "[CLS] open - source llms rock. [SEP]"
    with pytest.raises(InvalidArgumentError):
        tok.convert_ids_to_tokens([len(tok.vocab)])


def test_special_token_ids(tok):
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id) == (0, 100, 101, 102)
    assert len(tok.ids_to_tokens) == len(tok.vocab) == 30522
    assert all(tok.vocab[t] == i for i, t in enumerate(tok.ids_to_tokens))


# ---- input errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [None, 5, b"bytes", ["a"]])
def test_non_str_text_is_invalid_input(tiny, bad):
    with pytest.raises(InvalidInputError):
        tiny.encode(bad)
    with pytest.raises(InvalidInputError):
        tiny.tokenize(bad)
    with pytest.raises(InvalidInputError):
        tiny.encode("a", bad if bad is not None else 1.5)
    assert issubclass(InvalidInputError, TypeError)


def test_bad_batch_items_name_their_index(tiny):
    with pytest.raises(InvalidInputError, match=r"\[1\]"):
        tiny.batch_encode(["a", None])
    with pytest.raises(InvalidInputError, match=r"\[0\]"):
        tiny.batch_encode(["a"], pairs=[3])
    with pytest.raises(InvalidInputError):
        tiny.batch_encode("a string, not a list")
    with pytest.raises(InvalidArgumentError):
        tiny.batch_encode(["a", "b"], pairs=["c"])


# ---- loading ---------------------------------------------------------------------------------------------


def test_vocab_txt_and_tokenizer_json_agree(model_dir, tok, tmp_path):
    shutil.copy(model_dir / "vocab.txt", tmp_path / "vocab.txt")
    shutil.copy(model_dir / "tokenizer_config.json", tmp_path / "tokenizer_config.json")
    from_txt = WordPieceTokenizer.from_folder(tmp_path)
    assert from_txt.vocab == tok.vocab
    for text in ["Open-source LLMs rock.", "[SEP] Ça va? 東京", "x" * 101]:
        assert from_txt.encode(text) == tok.encode(text)


def test_from_pretrained_takes_a_folder(model_dir, tok):
    assert WordPieceTokenizer.from_pretrained(str(model_dir)).vocab == tok.vocab


@pytest.mark.parametrize(
    "vocab_txt",
    [
        b"",  # empty
        b"[PAD]\n[UNK]\n[CLS]\n[SEP]\na\na\n",  # duplicate
        b"[PAD]\n[CLS]\n[SEP]\na\n",  # no [UNK]
        b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n\xff\xfe\n",  # not UTF-8
    ],
)
def test_bad_vocab_txt(tmp_path, vocab_txt):
    (tmp_path / "vocab.txt").write_bytes(vocab_txt)
    with pytest.raises(TokenizerError):
        WordPieceTokenizer.from_folder(tmp_path)


def _tokenizer_json(**changes) -> str:
    spec = {
        "added_tokens": [{"id": i, "content": t, "special": True, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False} for i, t in enumerate(SPECIALS)],
        "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                       "strip_accents": None, "lowercase": True},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": {t: i for i, t in enumerate(TINY)}},
    }
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        node = spec
        for key in path:
            node = node[key]
        node[last] = value
    return json.dumps(spec)


def test_tokenizer_json_is_read(tmp_path, tiny):
    (tmp_path / "tokenizer.json").write_text(_tokenizer_json(model__max_input_chars_per_word=3))
    loaded = WordPieceTokenizer.from_folder(tmp_path)
    assert loaded.vocab == tiny.vocab
    assert loaded.tokenize("aaa aaaa [SEP]") == ["a", "##a", "##a", "[UNK]", "[SEP]"]


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[1, 2]",
        _tokenizer_json(model__type="BPE"),
        _tokenizer_json(normalizer__type="NFKC"),
        _tokenizer_json(normalizer__clean_text=False),
        _tokenizer_json(added_tokens=[], model__vocab={"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "[PAD]": 5}),  # a gap
        _tokenizer_json(model__unk_token="<unk>"),
        _tokenizer_json(added_tokens=[{"id": 4, "content": "[MASK]", "lstrip": True}]),
        _tokenizer_json(added_tokens=[{"id": 3, "content": "[MASK]"}]),  # id disagrees with the vocab
    ],
)
def test_bad_tokenizer_json(tmp_path, content):
    (tmp_path / "tokenizer.json").write_text(content)
    with pytest.raises(TokenizerError):
        WordPieceTokenizer.from_folder(tmp_path)


def test_missing_files(tmp_path):
    with pytest.raises(TokenizerError):
        WordPieceTokenizer.from_folder(tmp_path)
    with pytest.raises(ModelNotFoundError):
        WordPieceTokenizer.from_folder(tmp_path / "nope")


def test_bad_vocab_dict():
    with pytest.raises(TokenizerError):
        WordPieceTokenizer({})
    with pytest.raises(TokenizerError):
        WordPieceTokenizer({"[UNK]": 0, "[CLS]": 0, "[SEP]": 1, "[PAD]": 2})
    with pytest.raises(TokenizerError):
        WordPieceTokenizer({"[UNK]": "0"})
