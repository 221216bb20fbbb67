"""Regenerates npminilm/tokenization/_unicode_quirks.py: where the `tokenizers` crate's Unicode tables disagree
with Python's.

The crate's BertNormalizer/BertPreTokenizer take general categories from the `unicode_categories` crate
(tables from an old UnicodeData.txt, with an empty Cn table), canonical decompositions and classes from
`unicode-normalization-alignments` (also old), and lower-casing from Rust's std (newer than Python 3.11's
Unicode 14). This script asks the installed `tokenizers` about every code point, one property at a time,
and writes down each code point where the answer differs from the rule npminilm/tokenization/wordpiece.py
derives from `unicodedata`.

    python tools/unicode_quirks.py            # rewrite npminilm/tokenization/_unicode_quirks.py
    python tools/unicode_quirks.py --check    # exit 1 if the file is stale
"""

from __future__ import annotations

import argparse
import sys
import unicodedata
from pathlib import Path

import tokenizers
from tokenizers import normalizers, pre_tokenizers

OUT = Path(__file__).resolve().parents[1] / "npminilm" / "tokenization" / "_unicode_quirks.py"
ASCII_PUNCT = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
CODE_POINTS = [cp for cp in range(0x110000) if not 0xD800 <= cp <= 0xDFFF]


def bert(**on) -> normalizers.Normalizer:
    steps = dict(clean_text=False, handle_chinese_chars=False, strip_accents=False, lowercase=False)
    return normalizers.BertNormalizer(**{**steps, **on})


# The rules npminilm/tokenization/wordpiece.py applies before consulting the tables; the tables hold their
# exceptions.
def rule_other(ch: str) -> bool:
    return ch not in "\t\n\r" and unicodedata.category(ch) in ("Cc", "Cf", "Co", "Cs")


def rule_whitespace(ch: str) -> bool:
    return ch in "\t\n\r" or unicodedata.category(ch) in ("Zs", "Zl", "Zp")


def rule_punct(ch: str) -> bool:
    return ch in ASCII_PUNCT or unicodedata.category(ch)[0] == "P"


def sweep():
    clean, strip, lower = bert(clean_text=True), bert(strip_accents=True), bert(lowercase=True)
    nfd = normalizers.NFD()
    pre = pre_tokenizers.BertPreTokenizer()
    other, whitespace, punct, mn, starters, lowercase = set(), set(), set(), set(), set(), {}
    for cp in CODE_POINTS:
        ch = chr(cp)
        cleaned = clean.normalize_str(f"a{ch}b")
        dropped = cleaned == "ab"
        if dropped != (cp in (0, 0xFFFD) or rule_other(ch)):
            other.add(cp)
        if not dropped and (cleaned == "a b") != rule_whitespace(ch):
            whitespace.add(cp)
        words = [w for w, _ in pre.pre_tokenize_str(f"a{ch}b")]
        if len(words) != 2 and (len(words) == 3) != rule_punct(ch):
            punct.add(cp)
        if nfd.normalize_str(ch) != unicodedata.normalize("NFD", ch):
            if nfd.normalize_str(ch) != ch:
                sys.exit(f"U+{cp:04X}: the crate decomposes it differently, not just not at all")
            starters.add(cp)
        elif nfd.normalize_str(ch) == ch and (strip.normalize_str(ch) == "") != (unicodedata.category(ch) == "Mn"):
            mn.add(cp)
        if lower.normalize_str(ch) != ch.lower():
            lowercase[cp] = lower.normalize_str(ch)
    starters |= unknown_combining_classes(nfd)
    return other, whitespace, punct, mn, starters, lowercase


def unknown_combining_classes(nfd) -> set[int]:
    """Marks whose canonical class the crate does not know, so its NFD treats them as starters."""
    probes = {}
    for cp in CODE_POINTS:
        ccc = unicodedata.combining(chr(cp))
        if ccc and ccc not in probes and unicodedata.normalize("NFD", chr(cp)) == chr(cp):
            probes[ccc] = chr(cp)
    # A probe only tells something if the crate knows its own class: it must sort against a known mark.
    known = {}
    for ccc, p in probes.items():
        q = "\u0301" if ccc < 230 else "\u0334"
        if all(nfd.normalize_str(s) == unicodedata.normalize("NFD", s) for s in (f"a{p}{q}", f"a{q}{p}")):
            known[ccc] = p
    unknown = set()
    for cp in CODE_POINTS:
        ch = chr(cp)
        if not unicodedata.combining(ch) or unicodedata.normalize("NFD", ch) != ch:
            continue
        tests = [s for p in known.values() for s in (f"a{ch}{p}", f"a{p}{ch}")]
        if any(nfd.normalize_str(s) != unicodedata.normalize("NFD", s) for s in tests):
            # What the tokenizer will assume: the mark stays where it is and blocks reordering across it.
            for s in tests:
                head, tail = s.split(ch)
                if nfd.normalize_str(s) != unicodedata.normalize("NFD", head) + ch + unicodedata.normalize("NFD", tail):
                    sys.exit(f"U+{cp:04X}: the crate gives it a class other than 0")
            unknown.add(cp)
    return unknown


def ranges(cps: set[int]) -> str:
    spans, items = [], sorted(cps)
    for cp in items:
        if spans and spans[-1][1] == cp - 1:
            spans[-1][1] = cp
        else:
            spans.append([cp, cp])
    body = "".join(f"\n    (0x{lo:05X}, 0x{hi:05X}),  # {unicodedata.name(chr(lo), 'unassigned')}" for lo, hi in spans)
    return f"_expand({body}\n)" if spans else "frozenset()"


def render(other, whitespace, punct, mn, starters, lowercase) -> str:
    lower_items = "".join(f"\n    0x{cp:05X}: {s!r}," for cp, s in sorted(lowercase.items()))
    docstring = (
        '"""Generated by tools/unicode_quirks.py: '
        "where the `tokenizers` crate's Unicode tables differ from Python's.\"\"\""
    )
    return f'''{docstring}

# tokenizers {tokenizers.__version__}, Python unicodedata {unicodedata.unidata_version}. Each set lists the
# exceptions to a rule npminilm/tokenization/wordpiece.py derives from unicodedata; do not edit by hand.


def _expand(*spans: tuple[int, int]) -> frozenset[int]:
    return frozenset(cp for lo, hi in spans for cp in range(lo, hi + 1))


# Dropped by clean_text here iff not dropped there (the rule: Cc Cf Co Cs but \\t \\n \\r; Cn is kept, since the
# crate's Cn table is empty). These are Cf chars newer than the crate's tables.
OTHER_FLIPS = {ranges(other)}

# Whitespace iff not whitespace under the rule (\\t \\n \\r, Zs Zl Zp).
WHITESPACE_FLIPS = {ranges(whitespace)}

# Punctuation iff not punctuation under the rule (ASCII punctuation or P*): P* chars newer than the crate's
# tables, and chars whose category changed since.
PUNCT_FLIPS = {ranges(punct)}

# Stripped as Mn iff not Mn in unicodedata: Mn chars newer than the crate's tables, and category changes.
MN_FLIPS = {ranges(mn)}

# Neither decomposed nor reordered by the crate's NFD (it does not know their decomposition or class), so
# NFD must not move anything across them.
NFD_STARTERS = {ranges(starters)}

# Lower-case forms from Rust's std, newer than Python's tables, where they differ from str.lower().
LOWERCASE = {{{lower_items}
}}
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the generated file is stale")
    args = parser.parse_args()
    text = render(*sweep())
    if args.check:
        sys.exit(0 if OUT.read_text(encoding="utf-8") == text else 1)
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
