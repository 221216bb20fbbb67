"""BERT WordPiece tokenizer in pure Python, equal token for token to the HF `tokenizers` Bert pipeline.

The steps and their order are those of the Rust `tokenizers` crate (the parity target):

1. Added tokens ([CLS], [SEP], [PAD], [UNK], [MASK], ...) are cut out of the raw text first, case-sensitively
   and leftmost-longest, so "[SEP]" stays one token but "[sep]" does not.
2. BertNormalizer on each remaining piece: drop U+0000, U+FFFD and every "other" char (Cc Cf Co Cs) but
   \\t \\n \\r; map the remaining whitespace (Zs Zl Zp, \\t \\n \\r: Rust's `char::is_whitespace`, not Python's
   `str.isspace`, which also holds U+001C..U+001F) to " "; put spaces around CJK ideographs; strip accents
   (NFD, then drop Mn); lower-case one char at a time (Rust `char::to_lowercase`, so no final-sigma rule).
3. BertPreTokenizer: split on whitespace, and isolate every punctuation char (ASCII punctuation or P*).
4. WordPiece: greedy longest match from the left, "##" on continuation pieces; a word longer than
   `max_input_chars_per_word` chars, or one with an unmatchable rest, becomes the unknown token.

Unicode versions: the crate's tables are older or newer than Python 3.11's unicodedata (Unicode 14), and where
they disagree the crate is followed, by rule or by a generated table (npminilm/tokenization/_unicode_quirks.py,
written by tools/unicode_quirks.py from a sweep of every code point through `tokenizers` 0.23.3):

- Unassigned code points (Cn, 829,834 of them in Unicode 14) are kept as ordinary word chars, not dropped as
  "other": the crate's `unicode_categories` tables have an empty Cn category.
- OTHER_FLIPS (13): Cf chars newer than those tables (U+0890, U+0891, U+08E2, U+110CD, U+13430..U+13438) are
  kept, not dropped.
- PUNCT_FLIPS (106): P* chars newer than the tables (U+2E43.., Sogdian, Newa, ...) are not punctuation;
  U+166D (Po then, So now) and U+111C9 (Po then, Mn now) are.
- MN_FLIPS (385): Mn chars newer than the tables are not stripped (U+07FD, U+0898.., U+111C9, ...);
  U+1734 (Mn then, Mc now) is stripped.
- NFD_STARTERS (99): the crate's normalisation tables do not decompose U+11938 and do not know the combining
  class of 98 newer marks (U+07FD, U+1AC1.., U+1E130.., ...), so NFD leaves them in place as starters.
- LOWERCASE (55): Rust's std is newer: it lower-cases U+1C89, U+A7CB.., U+10D50.., U+16EA0.., which
  Python 3.11 sees as unassigned.

Differences left, by choice:

- Lone surrogates (U+D800..U+DFFF) cannot reach the crate at all (its Python binding refuses the string);
  here they are "other" (Cs) and dropped like a control char.
- `max_length` below the number of special tokens (2 single, 3 pair): the crate subtracts in unsigned
  arithmetic, wraps around and silently does not truncate; here it is an `InvalidArgumentError`.
- Added tokens with `lstrip`, `rstrip`, `single_word` or `normalized` set in tokenizer.json are refused
  (`TokenizerError`) rather than half-supported; BERT conversions leave them all off.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from ..errors import (
    InvalidArgumentError,
    InvalidInputError,
    ModelNotFoundError,
    TokenizerError,
)
from ._unicode_quirks import (
    LOWERCASE,
    MN_FLIPS,
    NFD_STARTERS,
    OTHER_FLIPS,
    PUNCT_FLIPS,
    WHITESPACE_FLIPS,
)

# Inclusive ranges the crate's BertNormalizer spaces out as CJK. Copied from the crate, not from the Python
# BertTokenizer: the crate starts the fifth range at U+2B920, the Python one at U+2B820.
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B920, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)

_ASCII_PUNCT = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
_ASCII_WORDS = re.compile("[" + re.escape(_ASCII_PUNCT) + "]|[^" + re.escape(_ASCII_PUNCT) + "]+")

# A word cache that outgrows this is cleared rather than evicted piecemeal: cheaper, and hits stay high
# because frequent words come right back.
_CACHE_LIMIT = 1 << 17

# Chars of a long text normalised at once when only its first tokens are wanted; doubles as it goes.
_WINDOW = 4096


def _is_cjk(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


# Each rule below is what unicodedata says; the *_FLIPS tables hold the code points where the crate's older
# tables say otherwise. Cn is not "other": the crate's Cn table is empty, so it keeps unassigned code points.
def _is_other(ch: str) -> bool:
    rule = ch not in "\t\n\r" and unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs")
    return rule != (ord(ch) in OTHER_FLIPS)


def _is_whitespace(ch: str) -> bool:
    rule = ch in "\t\n\r" or unicodedata.category(ch) in ("Zs", "Zl", "Zp")
    return rule != (ord(ch) in WHITESPACE_FLIPS)


def _is_punct(ch: str) -> bool:
    rule = ch in _ASCII_PUNCT or unicodedata.category(ch)[0] == "P"
    return rule != (ord(ch) in PUNCT_FLIPS)


def _is_mn(ch: str) -> bool:
    return (unicodedata.category(ch) == "Mn") != (ord(ch) in MN_FLIPS)


def _lower(ch: str) -> str:
    return LOWERCASE.get(ord(ch)) or ch.lower()


_NFD_STARTER = re.compile("([" + "".join(re.escape(chr(cp)) for cp in sorted(NFD_STARTERS)) + "])")


def _nfd(text: str) -> str:
    """NFD as the crate's older tables do it: the NFD_STARTERS stay put and nothing reorders across them."""
    if not NFD_STARTERS or _NFD_STARTER.search(text) is None:
        return unicodedata.normalize("NFD", text)
    parts = _NFD_STARTER.split(text)  # odd indices are the starters themselves
    return "".join(part if i % 2 else unicodedata.normalize("NFD", part) for i, part in enumerate(parts))


class _CleanMap(dict):
    """str.translate table for clean_text + CJK spacing, filled one code point at a time as text arrives."""

    def __init__(self, tokenize_chinese_chars: bool):
        super().__init__()
        self.cjk = tokenize_chinese_chars

    def __missing__(self, cp: int):
        ch = chr(cp)
        if cp == 0 or cp == 0xFFFD or _is_other(ch):
            out = None
        elif _is_whitespace(ch):
            out = " "
        elif self.cjk and _is_cjk(cp):
            out = f" {ch} "
        else:
            out = cp
        self[cp] = out
        return out


class _FoldMap(dict):
    """str.translate table for accent stripping (on NFD text) and per-char lower-casing."""

    def __init__(self, strip_accents: bool, lowercase: bool):
        super().__init__()
        self.strip = strip_accents
        self.lower = lowercase

    def __missing__(self, cp: int):
        ch = chr(cp)
        if self.strip and _is_mn(ch):
            out = None
        elif self.lower:
            out = _lower(ch)
        else:
            out = cp
        self[cp] = out
        return out


class _PunctMap(dict):
    def __missing__(self, ch: str) -> bool:
        out = _is_punct(ch)
        self[ch] = out
        return out


def _ascii_table(lowercase: bool) -> dict[int, str | None]:
    # ASCII has no CJK, no decompositions and no marks, so one translate does all of BertNormalizer, and
    # CPython's translate has a fast path for an all-ASCII table.
    table: dict[int, str | None] = {}
    for cp in range(128):
        ch = chr(cp)
        if cp == 0 or _is_other(ch):
            table[cp] = None
        elif _is_whitespace(ch):
            table[cp] = " "
        else:
            table[cp] = _lower(ch) if lowercase else ch
    return table


def _longest_first(n1: int, n2: int, budget: int) -> tuple[int, int]:
    """Lengths to keep of a pair under `budget` tokens, as the crate's `truncate_encodings` LongestFirst."""
    if n1 + n2 <= budget:
        return n1, n2
    swap = n1 > n2
    short, long_ = (n2, n1) if swap else (n1, n2)
    long_ = short if short > budget else max(short, budget - short)
    if short + long_ > budget:
        short = budget // 2
        long_ = short + budget % 2
    return (long_, short) if swap else (short, long_)


def _check_text(text, what: str) -> str:
    if not isinstance(text, str):
        raise InvalidInputError(f"{what} must be a str, got {type(text).__name__}")
    return text


def _check_batch(texts, what: str) -> list[str]:
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Sequence | np.ndarray):
        raise InvalidInputError(f"{what} must be a list of str, got {type(texts).__name__}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidInputError(f"{what}[{i}] must be a str, got {type(text).__name__}")
    return list(texts)


class WordPieceTokenizer:
    """BERT WordPiece tokenizer: `encode`/`batch_encode` give the ids HF's fast tokenizer gives."""

    def __init__(
        self,
        vocab: dict[str, int],
        do_lower_case: bool = True,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool = True,
        unk_token: str = "[UNK]",
        cls_token: str = "[CLS]",
        sep_token: str = "[SEP]",
        pad_token: str = "[PAD]",
        mask_token: str = "[MASK]",
        max_input_chars_per_word: int = 100,
        *,
        continuing_subword_prefix: str = "##",
        added_tokens: Iterable[str] | None = None,
    ):
        self.vocab = _checked_vocab(vocab)
        self.ids_to_tokens = [""] * len(self.vocab)
        for token, i in self.vocab.items():
            self.ids_to_tokens[i] = token
        for name, token in (("unk", unk_token), ("cls", cls_token), ("sep", sep_token), ("pad", pad_token)):
            if token not in self.vocab:
                raise TokenizerError(f"the {name} token {token!r} is not in the vocabulary")
        self.do_lower_case = bool(do_lower_case)
        # The crate's BertNormalizer reads a missing strip_accents as "whatever lowercase is".
        self.strip_accents = self.do_lower_case if strip_accents is None else bool(strip_accents)
        self.tokenize_chinese_chars = bool(tokenize_chinese_chars)
        self.unk_token, self.cls_token, self.sep_token = unk_token, cls_token, sep_token
        self.pad_token, self.mask_token = pad_token, mask_token
        self.unk_token_id = self.vocab[unk_token]
        self.cls_token_id = self.vocab[cls_token]
        self.sep_token_id = self.vocab[sep_token]
        self.pad_token_id = self.vocab[pad_token]
        self.mask_token_id = self.vocab.get(mask_token)
        self.max_input_chars_per_word = int(max_input_chars_per_word)
        self.continuing_subword_prefix = continuing_subword_prefix

        if added_tokens is None:
            added_tokens = [t for t in (pad_token, unk_token, cls_token, sep_token, mask_token) if t in self.vocab]
        self.added_tokens = {}
        for token in added_tokens:
            if token not in self.vocab:
                raise TokenizerError(f"the added token {token!r} is not in the vocabulary")
            if token:
                self.added_tokens[token] = self.vocab[token]
        # Longest first, so the regex's first-alternative-wins picks what the crate's leftmost-longest
        # Aho-Corasick picks.
        alternatives = sorted(self.added_tokens, key=len, reverse=True)
        self._added_re = re.compile("|".join(map(re.escape, alternatives))) if alternatives else None

        prefix_len = len(continuing_subword_prefix)
        self._max_piece = max(map(len, self.vocab), default=0)
        self._max_cont_piece = max(
            (len(t) - prefix_len for t in self.vocab if t.startswith(continuing_subword_prefix)), default=0
        )
        self._ascii_map = _ascii_table(self.do_lower_case)
        self._clean_map = _CleanMap(self.tokenize_chinese_chars)
        self._fold_map = _FoldMap(self.strip_accents, self.do_lower_case)
        self._punct = _PunctMap()
        cut = "".join(map(re.escape, " \t\n\r" + _ASCII_PUNCT))
        if self.tokenize_chinese_chars:
            cut += "".join(f"{re.escape(chr(lo))}-{re.escape(chr(hi))}" for lo, hi in _CJK_RANGES)
        self._cut = re.compile(f"[{cut}]")
        self._last_cut = re.compile(f"(?s:.*)([{cut}])")  # greedy: finds the last boundary in a window
        self._cache: dict[str, list[int]] = {}

    # ---- loading -------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, name_or_path) -> WordPieceTokenizer:
        """A folder path, or a model name that `npminilm.io.hub.resolve_model_path` turns into one."""
        folder = Path(name_or_path).expanduser()
        if folder.is_dir():
            return cls.from_folder(folder)
        from ..io.hub import resolve_model_path

        return cls.from_folder(resolve_model_path(str(name_or_path)))

    @classmethod
    def from_folder(cls, path) -> WordPieceTokenizer:
        """Reads tokenizer.json (what HF's fast tokenizer reads) or else vocab.txt, with tokenizer_config.json."""
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise ModelNotFoundError(f"no model folder at {folder}")
        config_path = folder / "tokenizer_config.json"
        config = _read_json(config_path) if config_path.is_file() else {}
        if not isinstance(config, dict):
            raise TokenizerError(f"{config_path} is not a JSON object")
        specials = {
            name: _token_content(config.get(f"{name}_token", default), config_path)
            for name, default in (
                ("unk", "[UNK]"),
                ("cls", "[CLS]"),
                ("sep", "[SEP]"),
                ("pad", "[PAD]"),
                ("mask", "[MASK]"),
            )
        }
        tokenizer_json = folder / "tokenizer.json"
        if tokenizer_json.is_file():
            return cls(**_kwargs_from_tokenizer_json(tokenizer_json, specials))
        vocab_txt = folder / "vocab.txt"
        if vocab_txt.is_file():
            return cls(
                _read_vocab_txt(vocab_txt),
                do_lower_case=config.get("do_lower_case", True),
                strip_accents=config.get("strip_accents"),
                tokenize_chinese_chars=config.get("tokenize_chinese_chars", True),
                **{f"{name}_token": token for name, token in specials.items()},
            )
        raise TokenizerError(f"{folder} holds neither tokenizer.json nor vocab.txt")

    # ---- text -> ids ---------------------------------------------------------------------------------

    def _segments(self, text: str) -> Iterator[tuple[str, int | None]]:
        """(raw text, None) for the text between added tokens and (token, id) for each added token, in order."""
        start = 0
        if self._added_re is not None:
            for match in self._added_re.finditer(text):
                if match.start() > start:
                    yield text[start : match.start()], None
                yield match.group(), self.added_tokens[match.group()]
                start = match.end()
        if start < len(text):
            yield text[start:], None

    def _ids(self, text: str) -> list[int]:
        """Ids of `text`, no special tokens added."""
        ids: list[int] = []
        for segment, added in self._segments(text):
            if added is None:
                self._extend_chunks(self._normalize(segment), ids)
            else:
                ids.append(added)
        return ids

    def _iter_ids(self, text: str) -> Iterator[list[int]]:
        """The ids of `text` a word at a time, normalising lazily, for when only the first ones are wanted."""
        for segment, added in self._segments(text):
            if added is not None:
                yield [added]
                continue
            for window in self._windows(segment):
                for chunk in self._normalize(window).split():
                    yield self._chunk_ids(chunk)

    def _ids_upto(self, text: str, limit: int) -> list[int]:
        ids: list[int] = []
        if limit > 0:
            for piece in self._iter_ids(text):
                ids.extend(piece)
                if len(ids) >= limit:
                    break
        return ids[:limit]

    def _windows(self, segment: str) -> Iterator[str]:
        """`segment` in growing windows, each ending before a char that every step treats as a hard boundary.

        A space, \t \n \r, ASCII punctuation or (with CJK spacing) a CJK ideograph ends a word, is never
        dropped, and is an NFD starter, so nothing reorders or merges across it: normalising the windows one
        by one gives the words of the whole, and a 1 MB string costs what its first few hundred tokens cost.
        """
        start, width = 0, _WINDOW
        while len(segment) - start > width:
            end = segment.rfind(" ", start + 1, start + width)
            if end == -1:
                match = self._last_cut.match(segment, start + 1, start + width)
                if match is not None:
                    end = match.start(1)
                else:
                    match = self._cut.search(segment, start + width)
                    end = len(segment) if match is None else match.start()
            yield segment[start:end]
            start, width = end, width * 2
        if start < len(segment):
            yield segment[start:]

    def _normalize(self, segment: str) -> str:
        if segment.isascii():
            return segment.translate(self._ascii_map)
        norm = segment.translate(self._clean_map)
        if self.strip_accents:
            norm = _nfd(norm)
        return norm.translate(self._fold_map)

    def _split_punct(self, chunk: str) -> list[str]:
        if chunk.isascii():
            return _ASCII_WORDS.findall(chunk)
        words, word = [], []
        for ch in chunk:
            if self._punct[ch]:
                if word:
                    words.append("".join(word))
                    word = []
                words.append(ch)
            else:
                word.append(ch)
        if word:
            words.append("".join(word))
        return words

    def _chunk_ids(self, chunk: str) -> list[int]:
        pieces = self._cache.get(chunk)
        if pieces is None:
            pieces = [i for word in self._split_punct(chunk) for i in self._wordpiece(word)]
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[chunk] = pieces
        return pieces

    def _extend_chunks(self, norm: str, ids: list[int]) -> None:
        cache = self._cache
        # After cleaning, " " is the only whitespace left, so str.split agrees with Rust's whitespace split.
        for chunk in norm.split():
            pieces = cache.get(chunk)
            ids.extend(self._chunk_ids(chunk) if pieces is None else pieces)

    def _wordpiece(self, word: str) -> list[int]:
        vocab = self.vocab
        if len(word) > self.max_input_chars_per_word:
            return [self.unk_token_id]
        whole = vocab.get(word)
        if whole is not None:
            return [whole]
        prefix = self.continuing_subword_prefix
        ids = []
        start, n = 0, len(word)
        while start < n:
            # No vocabulary entry is longer than the longest piece, so longer candidates cannot match.
            end = min(n, start + (self._max_piece if start == 0 else self._max_cont_piece))
            while end > start:
                piece = word[start:end] if start == 0 else prefix + word[start:end]
                i = vocab.get(piece)
                if i is not None:
                    break
                end -= 1
            else:
                return [self.unk_token_id]
            ids.append(i)
            start = end
        return ids

    def _truncated(self, text: str, pair: str | None, budget: int | None) -> tuple[list[int], list[int] | None]:
        if budget is None:
            return self._ids(text), None if pair is None else self._ids(pair)
        if pair is None:
            return self._ids_upto(text, budget), None
        # One token past the budget tells "too long" from "fits", which is all longest_first needs, except
        # when both are too long and the budget is odd: the odd token goes to the longer one.
        a, b = self._ids_upto(text, budget + 1), self._ids_upto(pair, budget + 1)
        n1, n2 = len(a), len(b)
        if n1 > budget and n2 > budget and budget % 2:
            longer = self._compare_lengths(text, pair)
            n1, n2 = n1 + (longer > 0), n2 + (longer < 0)
        n1, n2 = _longest_first(n1, n2, budget)
        return a[:n1], b[:n2]

    def _compare_lengths(self, text: str, pair: str) -> int:
        """Sign of len(ids(text)) - len(ids(pair)), tokenising both in step: it costs the shorter one twice."""
        first, second = self._iter_ids(text), self._iter_ids(pair)
        n1 = n2 = 0
        while True:
            if n1 <= n2:
                piece = next(first, None)
                if piece is None:
                    return -1 if n1 < n2 or next(second, None) is not None else 0
                n1 += len(piece)
            else:
                piece = next(second, None)
                if piece is None:
                    return 1
                n2 += len(piece)

    def _encode_with_types(
        self, text: str, pair: str | None, add_special_tokens: bool, max_length: int | None
    ) -> tuple[list[int], list[int]]:
        n_special = (2 if pair is None else 3) if add_special_tokens else 0
        budget = None
        if max_length is not None:
            if isinstance(max_length, bool) or not isinstance(max_length, int | np.integer):
                raise InvalidInputError(f"max_length must be an int or None, got {type(max_length).__name__}")
            if max_length < n_special:
                raise InvalidArgumentError(
                    f"max_length={max_length} leaves no room for the {n_special} special tokens"
                )
            budget = int(max_length) - n_special
        a, b = self._truncated(text, pair, budget)
        if not add_special_tokens:
            ids = a if b is None else a + b
            return ids, [0] * len(a) + [1] * (len(ids) - len(a))
        first = [self.cls_token_id, *a, self.sep_token_id]
        if b is None:
            return first, [0] * len(first)
        second = [*b, self.sep_token_id]
        return first + second, [0] * len(first) + [1] * len(second)

    # ---- public API ----------------------------------------------------------------------------------

    def normalize(self, text: str) -> str:
        """`text` after BertNormalizer (added tokens are not cut out first)."""
        return self._normalize(_check_text(text, "text"))

    def pre_tokenize(self, text: str) -> list[str]:
        """Words of `text` after BertNormalizer and BertPreTokenizer (added tokens are not cut out first)."""
        return [word for chunk in self.normalize(text).split() for word in self._split_punct(chunk)]

    def tokenize(self, text: str) -> list[str]:
        """Token strings of `text`, no [CLS]/[SEP] added."""
        _check_text(text, "text")
        return [self.ids_to_tokens[i] for i in self._ids(text)]

    def encode(
        self, text: str, pair: str | None = None, add_special_tokens: bool = True, max_length: int | None = None
    ) -> list[int]:
        """Ids of `[CLS] text [SEP]` (`[CLS] text [SEP] pair [SEP]`), at most `max_length` of them counting
        the special tokens; a pair is cut longest-first."""
        _check_text(text, "text")
        if pair is not None:
            _check_text(pair, "pair")
        return self._encode_with_types(text, pair, add_special_tokens, max_length)[0]

    def batch_encode(
        self,
        texts: Sequence[str],
        pairs: Sequence[str] | None = None,
        max_length: int | None = None,
        padding: bool = True,
    ) -> dict:
        """{"input_ids", "attention_mask", "token_type_ids"} as int64 (B, T) arrays right-padded to the
        longest row; with padding=False, lists of 1-D int64 arrays instead."""
        texts = _check_batch(texts, "texts")
        if pairs is not None:
            pairs = _check_batch(pairs, "pairs")
            if len(pairs) != len(texts):
                raise InvalidArgumentError(f"{len(texts)} texts but {len(pairs)} pairs")
        rows = [
            self._encode_with_types(text, None if pairs is None else pairs[i], True, max_length)
            for i, text in enumerate(texts)
        ]
        if not padding:
            return {
                "input_ids": [np.array(ids, dtype=np.int64) for ids, _ in rows],
                "attention_mask": [np.ones(len(ids), dtype=np.int64) for ids, _ in rows],
                "token_type_ids": [np.array(types, dtype=np.int64) for _, types in rows],
            }
        width = max((len(ids) for ids, _ in rows), default=0)
        input_ids = np.full((len(rows), width), self.pad_token_id, dtype=np.int64)  # [B, T]
        attention_mask = np.zeros((len(rows), width), dtype=np.int64)  # [B, T]
        token_type_ids = np.zeros((len(rows), width), dtype=np.int64)  # [B, T]
        for row, (ids, types) in enumerate(rows):
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
            token_type_ids[row, : len(types)] = types
        return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}

    def convert_tokens_to_ids(self, tokens):
        """Id of a token, or ids of a list of tokens; unknown tokens give the unknown token's id."""
        if isinstance(tokens, str):
            return self.vocab.get(tokens, self.unk_token_id)
        return [self.vocab.get(_check_text(t, "token"), self.unk_token_id) for t in tokens]

    def convert_ids_to_tokens(self, ids):
        """Token of an id, or tokens of a sequence of ids."""
        if isinstance(ids, int | np.integer) and not isinstance(ids, bool):
            return self._token(int(ids))
        return [self._token(i) for i in np.asarray(ids, dtype=np.int64).reshape(-1).tolist()]

    def _token(self, i: int) -> str:
        if not 0 <= i < len(self.ids_to_tokens):
            raise InvalidArgumentError(f"token id {i} is outside the vocabulary (size {len(self.ids_to_tokens)})")
        return self.ids_to_tokens[i]

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        """Text of `ids` as the crate's WordPiece decoder writes it: "##" pieces glued on, cleanup on."""
        tokens = self.convert_ids_to_tokens(ids)
        if isinstance(tokens, str):
            tokens = [tokens]
        if skip_special_tokens:
            tokens = [t for t in tokens if t not in self.added_tokens]
        prefix = self.continuing_subword_prefix
        parts = []
        for i, token in enumerate(tokens):
            if i:
                token = token[len(prefix) :] if token.startswith(prefix) else " " + token
            parts.append(_cleanup(token))
        return "".join(parts)

    def __len__(self) -> int:
        return len(self.ids_to_tokens)

    def __repr__(self) -> str:
        return (
            f"WordPieceTokenizer(vocab_size={len(self)}, do_lower_case={self.do_lower_case}, "
            f"strip_accents={self.strip_accents}, tokenize_chinese_chars={self.tokenize_chinese_chars})"
        )


def _cleanup(token: str) -> str:
    # The crate's decoder undoes the spaces that tokenisation put before punctuation and contractions.
    for dirty, clean in (
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" do not", " don't"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ):
        token = token.replace(dirty, clean)
    return token


# ---- file readers ------------------------------------------------------------------------------------


def _checked_vocab(vocab) -> dict[str, int]:
    if not isinstance(vocab, dict) or not vocab:
        raise TokenizerError("the vocabulary must be a non-empty dict of token -> id")
    seen = set()
    for token, i in vocab.items():
        if not isinstance(token, str) or isinstance(i, bool) or not isinstance(i, int):
            raise TokenizerError(f"vocabulary entry {token!r}: {i!r} is not str -> int")
        if i in seen:
            raise TokenizerError(f"vocabulary id {i} is given to more than one token")
        seen.add(i)
    if min(seen) != 0 or max(seen) != len(seen) - 1:
        raise TokenizerError(f"vocabulary ids must be 0..{len(seen) - 1} without gaps")
    return dict(vocab)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TokenizerError(f"cannot read {path}: {e}") from e


def _token_content(token, source: Path) -> str:
    # Newer tokenizer_config.json files store special tokens as AddedToken dicts.
    if isinstance(token, dict):
        token = token.get("content")
    if not isinstance(token, str):
        raise TokenizerError(f"{source}: a special token is {token!r}, not a string")
    return token


def _read_vocab_txt(path: Path) -> dict[str, int]:
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise TokenizerError(f"cannot read {path}: {e}") from e
    if lines and lines[-1] == "":
        lines.pop()
    vocab: dict[str, int] = {}
    for i, line in enumerate(lines):
        # Both HF readers strip the line ending; the Rust one strips all trailing whitespace.
        token = line.rstrip()
        if token in vocab:
            raise TokenizerError(f"{path}:{i + 1}: token {token!r} already on line {vocab[token] + 1}")
        vocab[token] = i
    if not vocab:
        raise TokenizerError(f"{path} is empty")
    return vocab


def _kwargs_from_tokenizer_json(path: Path, specials: dict[str, str]) -> dict:
    spec = _read_json(path)
    if not isinstance(spec, dict):
        raise TokenizerError(f"{path} is not a JSON object")
    model = spec.get("model") or {}
    normalizer = spec.get("normalizer") or {}
    pre_tokenizer = spec.get("pre_tokenizer") or {}
    if model.get("type", "WordPiece") != "WordPiece" or not isinstance(model.get("vocab"), dict):
        raise TokenizerError(f"{path}: model is not a WordPiece model with a vocab")
    if normalizer.get("type") != "BertNormalizer" or pre_tokenizer.get("type") != "BertPreTokenizer":
        raise TokenizerError(
            f"{path}: needs BertNormalizer + BertPreTokenizer, has "
            f"{normalizer.get('type')} + {pre_tokenizer.get('type')}"
        )
    if not normalizer.get("clean_text", True):
        raise TokenizerError(f"{path}: BertNormalizer with clean_text=false is not supported")
    vocab = dict(model["vocab"])
    added = []
    for entry in spec.get("added_tokens") or []:
        content, i = entry.get("content"), entry.get("id")
        # These options change where an added token matches; every BERT conversion leaves them off.
        if any(entry.get(flag) for flag in ("single_word", "lstrip", "rstrip", "normalized")):
            raise TokenizerError(f"{path}: added token {content!r} uses options that are not supported")
        if vocab.setdefault(content, i) != i:
            raise TokenizerError(f"{path}: added token {content!r} has id {i} but the vocab says {vocab[content]}")
        added.append(content)
    lowercase = normalizer.get("lowercase", True)
    return {
        "vocab": vocab,
        "do_lower_case": lowercase,
        "strip_accents": normalizer.get("strip_accents"),
        "tokenize_chinese_chars": normalizer.get("handle_chinese_chars", True),
        "unk_token": model.get("unk_token", specials["unk"]),
        "cls_token": specials["cls"],
        "sep_token": specials["sep"],
        "pad_token": specials["pad"],
        "mask_token": specials["mask"],
        "max_input_chars_per_word": model.get("max_input_chars_per_word", 100),
        "continuing_subword_prefix": model.get("continuing_subword_prefix", "##"),
        "added_tokens": added,
    }
