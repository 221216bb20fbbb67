"""Char and byte-level BPE tokenizers: round trips (Hypothesis), hand-worked merges, save/load, errors."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from npminilm.decoder.tokenizers import ByteBPETokenizer, CharTokenizer, load_tokenizer, save_tokenizer
from npminilm.errors import TokenizerError, UnknownCharacterError

CORPUS = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"
          "naïve café — 日本語のテキスト 😀👍🏽 x_y 1234 it's we'll\t tabs\r\n") * 3
BPE = ByteBPETokenizer.train(CORPUS, 300)
# every code point, lone surrogates included (Python str may hold them; they must survive too)
ANY_CHAR = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())


def test_hand_worked_merges():
    # aaabdaaabac: (a,a) x4 -> Z=256: ZabdZabac; then (a,b) and (Z,a) tie at 2, (97, 98) < (256, 97) -> Y=257:
    # ZYdZYac; then (Z,Y) x2 -> X=258: XdXac. The textbook example, with the tie broken by id order.
    tok = ByteBPETokenizer.train("aaabdaaabac", 259)
    assert tok.merges == [(97, 97), (97, 98), (256, 257)]
    assert tok.encode("aaabdaaabac") == [258, ord("d"), 258, ord("a"), ord("c")]
    assert tok.vocab[258] == b"aaab"


def test_merges_never_cross_chunks():
    # "ab ab" splits into "ab" and " ab": (b, space) is never a pair, and training stops when pairs run out.
    tok = ByteBPETokenizer.train("ab ab", 1000)
    assert tok.merges == [(97, 98), (32, 256)]
    assert tok.encode("ab ab") == [256, 257]


def test_bpe_compresses_and_vocab_size():
    assert BPE.vocab_size == 300 and len(BPE.merges) == 44
    assert len(BPE.encode(CORPUS)) < len(CORPUS.encode("utf-8")) * 0.7


@given(st.text(alphabet=ANY_CHAR, max_size=60))
def test_bpe_round_trip_any_string(text):
    assert BPE.decode(BPE.encode(text)) == text


@pytest.mark.parametrize("text", ["", "😀", "👨‍👩‍👧‍👦 family", "e\u0301", "\ud800", "a\udfffb", "\ud83d\ude00",
                                  "\x00\x01", "\ufeffBOM", "\U0010ffff", "日本語", "  \n\n  ", "'s 's'll"])
def test_bpe_round_trip_awkward(text):
    ids = BPE.encode(text)
    assert all(0 <= i < BPE.vocab_size for i in ids)
    assert BPE.decode(ids) == text


def test_bpe_streaming_decoder_waits_for_whole_characters():
    text = "ab 😀 日本"
    feed = BPE.decoder()
    assert "".join(feed(i) for i in ByteBPETokenizer([]).encode(text)) == text  # one byte at a time
    feed = BPE.decoder()
    assert "".join(feed(i) for i in BPE.encode(text)) == text


def test_bpe_decode_of_invalid_bytes_is_replacement_not_error():
    assert BPE.decode([0xFF, ord("a")]) == "\ufffda"


@given(st.text(alphabet=sorted(set(CORPUS)), max_size=80))
def test_char_round_trip(text):
    tok = CharTokenizer.train(CORPUS)
    assert tok.decode(tok.encode(text)) == text


def test_char_vocab_and_unknown_characters():
    tok = CharTokenizer.train("hello")
    assert tok.chars == ["e", "h", "l", "o"] and tok.encode("hole") == [1, 3, 2, 0]
    with pytest.raises(UnknownCharacterError, match="'z'"):
        tok.encode("hz")


@pytest.mark.parametrize("tok", [CharTokenizer.train(CORPUS + "\ud800"), BPE], ids=["char", "bpe"])
def test_save_load(tmp_path, tok):
    path = tmp_path / "tok.json"
    save_tokenizer(tok, path)
    json.loads(path.read_text(encoding="ascii"))  # plain ASCII JSON, even with a lone surrogate in the vocab
    again = load_tokenizer(path)
    assert type(again) is type(tok) and again.to_dict() == tok.to_dict()
    text = CORPUS[:50] + "\ud800"
    assert again.encode(text) == tok.encode(text)


def test_errors(tmp_path):
    with pytest.raises(TokenizerError, match="empty"):
        CharTokenizer.train("")
    with pytest.raises(TokenizerError, match="empty"):
        ByteBPETokenizer.train("", 300)
    with pytest.raises(TokenizerError, match="at least 256"):
        ByteBPETokenizer.train("abc", 100)
    with pytest.raises(TokenizerError, match="not yet defined"):
        ByteBPETokenizer([(300, 1)])
    (tmp_path / "bad.json").write_text('{"type": "wordpiece"}')
    with pytest.raises(TokenizerError, match="unknown tokenizer type"):
        load_tokenizer(tmp_path / "bad.json")
