"""Tokenizers for the small language models: character-level, and byte-level BPE trained from scratch.

Both map str -> list[int] and back, and save/load as one JSON file whose "type" says which it is.

Byte-level BPE (GPT-2's scheme, written from first principles):
  1. Pre-split the text into chunks with a regex (a word with its leading space, a run of digits, a run of
     punctuation, whitespace), so that merges never cross a word boundary.
  2. Each chunk becomes its UTF-8 bytes (`surrogatepass`, so even lone surrogates survive); ids 0..255 are bytes.
  3. Training: count every adjacent pair of ids over all chunks (weighted by how often the chunk occurs), merge
     the most frequent pair into a new id 256 + k, repeat until the vocabulary has the target size. A tie goes
     to the smallest pair (a, b) in id order, so training is deterministic.
  4. Encoding a chunk: repeatedly merge the adjacent pair with the lowest merge rank (the earliest learned).
Decoding concatenates the bytes of the ids and decodes them as UTF-8, so decode(encode(s)) == s for every str.

Special tokens (a chat template's `<|im_start|>`, `<|im_end|>`) take the ids after either base vocabulary. No text
ever encodes to one (a message that spells `<|im_end|>` stays those characters), so only the code that lays out a
chat places them, by `special_id`; decode writes their names.
"""

from __future__ import annotations

import codecs
import json
import re
from collections import Counter, defaultdict

from ..errors import TokenizerError, UnknownCharacterError

# GPT-2's pre-split, with `[^\W\d_]` (a letter) standing in for \p{L} and `\d` for \p{N} in Python's re.
SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d+| ?[^\s\w]+|\s+(?!\S)|\s+|_+"""


class SpecialTokens:
    """The special tokens of a tokenizer: ids base_size, base_size + 1, ... after its base vocabulary."""

    def _set_special(self, special, base_size):
        self.special = list(special)
        if len(set(self.special)) != len(self.special) or not all(isinstance(t, str) and t for t in self.special):
            raise TokenizerError(f"special tokens must be distinct non-empty strings, got {self.special!r}")
        self.base_size = base_size
        self._special_ids = {t: base_size + k for k, t in enumerate(self.special)}

    @property
    def vocab_size(self) -> int:
        return self.base_size + len(self.special)

    def special_id(self, token: str) -> int:
        try:
            return self._special_ids[token]
        except KeyError:
            raise TokenizerError(f"the tokenizer has no special token {token!r}") from None

    def with_special(self, tokens):
        """A copy with the tokens it lacks appended as new special ids (existing ids keep their meaning)."""
        return self._with(self.special + [t for t in tokens if t not in self._special_ids])


class CharTokenizer(SpecialTokens):
    """One id per character of the training corpus, in sorted order; then the special tokens."""

    kind = "char"

    def __init__(self, chars, special=()):
        self.chars = list(chars)
        if len(set(self.chars)) != len(self.chars) or not all(isinstance(c, str) and len(c) == 1 for c in self.chars):
            raise TokenizerError("a character vocabulary must be distinct single characters")
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        self._set_special(special, len(self.chars))
        if any(t in self.stoi for t in self.special):
            raise TokenizerError("a special token cannot be one of the vocabulary's characters")
        self._names = self.chars + self.special  # id -> its text

    def _with(self, special):
        return CharTokenizer(self.chars, special)

    @classmethod
    def train(cls, text: str) -> "CharTokenizer":
        if not text:
            raise TokenizerError("cannot build a character vocabulary from an empty corpus")
        return cls(sorted(set(text)))

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError:
            unknown = sorted({c for c in text if c not in self.stoi})
            shown = ", ".join(repr(c) for c in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
            raise UnknownCharacterError(f"text has characters the vocabulary lacks: {shown}") from None

    def decode(self, ids) -> str:
        return "".join(self._names[i] for i in ids)

    def decoder(self):
        """A streaming decoder: feed(id) -> the text it completes (for a char model, always its character)."""
        return self._names.__getitem__

    def to_dict(self) -> dict:
        return {"type": "char", "chars": self.chars, **({"special": self.special} if self.special else {})}


class ByteBPETokenizer(SpecialTokens):
    """Byte-level BPE: ids 0..255 are the bytes, id 256 + k is merges[k] = (a, b); then the special tokens."""

    kind = "bpe"

    def __init__(self, merges, pattern=SPLIT_PATTERN, special=()):
        self.merges = [tuple(m) for m in merges]
        self.pattern = pattern
        self._split = re.compile(pattern)
        self.ranks = {pair: k for k, pair in enumerate(self.merges)}
        self.vocab = [bytes([b]) for b in range(256)]
        for k, (a, b) in enumerate(self.merges):
            if not (0 <= a < 256 + k and 0 <= b < 256 + k):
                raise TokenizerError(f"merge {k} ({a}, {b}) refers to an id not yet defined")
            self.vocab.append(self.vocab[a] + self.vocab[b])
        self._cache: dict[str, list[int]] = {}
        self._set_special(special, 256 + len(self.merges))

    def _with(self, special):
        return ByteBPETokenizer(self.merges, self.pattern, special)

    @classmethod
    def train(cls, text: str, vocab_size: int, pattern=SPLIT_PATTERN) -> "ByteBPETokenizer":
        """Learn vocab_size - 256 merges from text (fewer if the corpus runs out of pairs)."""
        if vocab_size < 256:
            raise TokenizerError(f"a byte-level vocabulary needs at least 256 ids, got vocab size {vocab_size}")
        if not text:
            raise TokenizerError("cannot train BPE on an empty corpus")
        chunk_counts = Counter(re.findall(pattern, text))
        words = [list(_to_bytes(c)) for c in chunk_counts]
        freqs = list(chunk_counts.values())
        pair_counts: Counter = Counter()
        where = defaultdict(set)  # pair -> indices of the words holding it
        for w, (word, f) in enumerate(zip(words, freqs)):
            for pair in zip(word, word[1:]):
                pair_counts[pair] += f
                where[pair].add(w)
        merges = []
        while len(merges) < vocab_size - 256 and pair_counts:
            # highest count; on a tie, the smallest (a, b)
            best = min(pair_counts, key=lambda p: (-pair_counts[p], p))
            if pair_counts[best] <= 0:
                break
            new = 256 + len(merges)
            merges.append(best)
            for w in list(where[best]):
                word, f = words[w], freqs[w]
                for pair in zip(word, word[1:]):  # take this word's pairs out, merge, put the new ones back
                    pair_counts[pair] -= f
                merged = _merge(word, best, new)
                for pair in zip(merged, merged[1:]):
                    pair_counts[pair] += f
                    where[pair].add(w)
                words[w] = merged
            for pair in [p for p, c in pair_counts.items() if c <= 0]:
                del pair_counts[pair]
                where.pop(pair, None)
        return cls(merges, pattern)

    def _encode_chunk(self, chunk: str) -> list[int]:
        ids = self._cache.get(chunk)
        if ids is None:
            ids = list(_to_bytes(chunk))
            while len(ids) > 1:
                pair = min(zip(ids, ids[1:]), key=lambda p: self.ranks.get(p, len(self.ranks)))
                if pair not in self.ranks:
                    break
                ids = _merge(ids, pair, 256 + self.ranks[pair])
            if len(self._cache) < 100_000:
                self._cache[chunk] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        out = []
        for chunk in self._split.findall(text):
            out.extend(self._encode_chunk(chunk))
        return out

    def decode(self, ids) -> str:
        out, run = [], []  # runs of byte ids between special tokens
        for i in ids:
            if i < self.base_size:
                run.append(i)
            else:
                out += [_decode_bytes(b"".join(self.vocab[j] for j in run)), self.special[i - self.base_size]]
                run = []
        return "".join(out) + _decode_bytes(b"".join(self.vocab[j] for j in run))

    def decoder(self):
        """A streaming decoder: feed(id) -> the text it completes; bytes of an unfinished character wait (a
        special token first flushes them)."""
        inc = codecs.getincrementaldecoder("utf-8")(errors="replace")

        def feed(i):
            if i < self.base_size:
                return inc.decode(self.vocab[i])
            pending = inc.decode(b"", final=True)
            inc.reset()
            return pending + self.special[i - self.base_size]

        return feed

    def to_dict(self) -> dict:
        return {"type": "bpe", "pattern": self.pattern, "merges": [list(m) for m in self.merges],
                **({"special": self.special} if self.special else {})}


def _decode_bytes(data: bytes) -> str:
    try:
        return data.decode("utf-8", errors="surrogatepass")
    except UnicodeDecodeError:  # ids that no encode() produced (e.g. sampled): show the bad bytes as U+FFFD
        return data.decode("utf-8", errors="replace")


def _to_bytes(text: str) -> bytes:
    return text.encode("utf-8", errors="surrogatepass")


def _merge(ids, pair, new):
    """Replace every non-overlapping occurrence of pair (left to right) in ids with new."""
    out, i, n = [], 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def tokenizer_from_dict(d: dict):
    kind = d.get("type") if isinstance(d, dict) else None
    try:
        if kind == "char":
            return CharTokenizer(d["chars"], d.get("special", ()))
        if kind == "bpe":
            return ByteBPETokenizer(d["merges"], d.get("pattern", SPLIT_PATTERN), d.get("special", ()))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, TokenizerError):
            raise
        raise TokenizerError(f"bad {kind} tokenizer description: {exc}") from None
    raise TokenizerError(f"unknown tokenizer type {kind!r} (expected 'char' or 'bpe')")


def save_tokenizer(tok, path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(tok.to_dict(), f, ensure_ascii=True)  # ASCII: lone surrogates in a char vocab stay valid JSON


def load_tokenizer(path):
    with open(path, encoding="utf-8") as f:
        try:
            d = json.load(f)
        except json.JSONDecodeError as exc:
            raise TokenizerError(f"{path}: not a tokenizer JSON file ({exc})") from None
    return tokenizer_from_dict(d)
