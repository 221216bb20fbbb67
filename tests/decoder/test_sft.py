"""Supervised fine-tuning without torch: special tokens in both tokenizers, the ChatML template and which tokens
it trains, chat files and their one-line errors, the masked loss and its gradient (against a float64 reference
and finite differences, sharded or not), the vocabulary's growth, and a fine-tuned model answering in the
template."""

import json

import numpy as np
import pytest

from npminilm.decoder.chat import IM_END, IM_START, chat_tokenizer, read_chats, render
from npminilm.decoder.config import GPTConfig
from npminilm.decoder.model import gpt_forward, init_params
from npminilm.decoder.sampling import generate
from npminilm.decoder.sft import ChatBatches, grow_vocab, pad, sft, to_example
from npminilm.decoder.tokenizers import ByteBPETokenizer, CharTokenizer, load_tokenizer, save_tokenizer
from npminilm.decoder.train import IGNORE, TrainConfig, loss_and_grads, train
from npminilm.errors import DataError, TokenizerError, UsageError
from npminilm.runtime.parallel import worker_pool
from tests.decoder.test_model import perturbed_params
from tests.helpers import assert_close

ALPHABET = "abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ.,:!?'\n"
CHAR = chat_tokenizer(CharTokenizer.train(ALPHABET))
BPE = chat_tokenizer(ByteBPETokenizer.train("the user said hello; the assistant answered " * 20 + "naïve 日本", 290))


def random_messages(rng, n=None, system=None):
    words = ["thou", "art", "ROMEO", "speak", "yes", "no!", "what?", "a", "b c"]
    n = int(rng.integers(2, 6)) if n is None else n
    roles = (["system"] if (rng.random() < 0.5 if system is None else system) else []) + \
        [("user", "assistant")[k % 2] for k in range(n)]
    return [{"role": r, "content": " ".join(rng.choice(words, int(rng.integers(0, 4))))} for r in roles]


# ------------------------------------------------------------------------------------------ special tokens

@pytest.mark.parametrize("tok", [CHAR, BPE], ids=["char", "bpe"])
def test_special_tokens_follow_the_base_vocabulary(tok, tmp_path):
    assert tok.special == [IM_START, IM_END] and tok.vocab_size == tok.base_size + 2
    assert (tok.special_id(IM_START), tok.special_id(IM_END)) == (tok.base_size, tok.base_size + 1)
    assert chat_tokenizer(tok).to_dict() == tok.to_dict()  # adding them again changes nothing
    with pytest.raises(TokenizerError, match="no special token"):
        tok.special_id("<|endoftext|>")
    ids = tok.encode("a b") + [tok.special_id(IM_END)] + tok.encode("\n") + [tok.special_id(IM_START)]
    assert tok.decode(ids) == f"a b{IM_END}\n{IM_START}"
    feed = tok.decoder()
    assert "".join(feed(i) for i in ids) == tok.decode(ids)
    save_tokenizer(tok, tmp_path / "t.json")
    again = load_tokenizer(tmp_path / "t.json")
    assert again.to_dict() == tok.to_dict() and again.special_id(IM_END) == tok.special_id(IM_END)


def test_no_text_encodes_to_a_special_token():
    # text that spells the template's tokens stays text: only the template places them
    spelled = f"{IM_START}user\nhi{IM_END}"
    ids = BPE.encode(spelled)
    assert all(i < BPE.base_size for i in ids) and BPE.decode(ids) == spelled


def test_bpe_streaming_flushes_before_a_special_token():
    text = "naïve 日本"
    ids = BPE.encode(text)
    cut = [i for i in ByteBPETokenizer([]).encode("日")]  # a character's bytes, cut short by the special token
    feed = BPE.decoder()
    out = "".join(feed(i) for i in ids + cut[:2] + [BPE.special_id(IM_END)] + ids)
    assert out == text + "\ufffd" + IM_END + text


def test_special_token_errors():
    with pytest.raises(TokenizerError, match="one of the vocabulary's characters"):
        CharTokenizer.train("ab|").with_special(["|"])
    with pytest.raises(TokenizerError, match="distinct non-empty"):
        CharTokenizer(list("ab"), ["<x>", "<x>"])


# ------------------------------------------------------------------------------------------ the template

def test_template_is_chatml_and_trains_the_assistant_turns_only():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who art thou?"},
                {"role": "assistant", "content": "ROMEO."}, {"role": "user", "content": "Speak!"},
                {"role": "assistant", "content": "No."}]
    for tok in (CHAR, BPE):
        ids, trained = render(messages, tok)
        assert tok.decode(ids) == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWho art thou?"
                                   "<|im_end|>\n<|im_start|>assistant\nROMEO.<|im_end|>\n<|im_start|>user\nSpeak!"
                                   "<|im_end|>\n<|im_start|>assistant\nNo.<|im_end|>\n")
        assert tok.decode([i for i, t in zip(ids, trained) if t]) == "ROMEO.<|im_end|>No.<|im_end|>"
        prompt, trained = render(messages[:2], tok, add_generation_prompt=True)
        assert tok.decode(prompt).endswith("Who art thou?<|im_end|>\n<|im_start|>assistant\n") and not any(trained)


def test_example_targets_are_the_next_assistant_tokens():
    rng = np.random.default_rng()
    for _ in range(20):
        messages = random_messages(rng)
        ids, trained = render(messages, CHAR)
        block = int(rng.integers(4, len(ids) + 5))
        example = to_example(ids, trained, block)
        kept = min(len(ids), block + 1)
        if not any(trained[1:kept]):
            assert example is None
            continue
        x, y = example
        assert x.tolist() == ids[:kept - 1] and len(y) == len(x) <= block
        for t in range(len(x)):  # target t is token t + 1, trained exactly when that token is the assistant's
            assert y[t] == (ids[t + 1] if trained[t + 1] else IGNORE)


# ------------------------------------------------------------------------------------------ chat files

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


@pytest.mark.parametrize("line, message", [
    ("{not json", "not JSON"),
    ('["a list"]', 'an object with a "messages" list'),
    ('{"messages": []}', '"messages" is empty'),
    ('{"messages": [{"role": "user"}]}', 'message 1 must be an object with "role" and "content"'),
    ('{"messages": [{"role": "bot", "content": "x"}]}', "message 1 has role 'bot'"),
    ('{"messages": [{"role": "user", "content": 3}]}', "message 1's content is int"),
    ('{"messages": [{"role": "user", "content": "x", "name": "n"}]}', "(and nothing else)"),
    ('{"messages": [{"role": "user", "content": "hi"}]}', "no assistant message"),
    ('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "€"}]}',
     "characters the vocabulary lacks: '€'"),
])  # fmt: skip
def test_a_bad_record_names_its_line(line, message, tmp_path):
    path = tmp_path / "chats.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + line + "\n" + json.dumps(GOOD) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as exc:
        read_chats(path, CHAR)
    assert str(exc.value).startswith(f"{path}:3: ") and message in str(exc.value) and "\n" not in str(exc.value)


def test_chat_file_errors(tmp_path):
    path = tmp_path / "chats.jsonl"
    path.write_bytes(json.dumps(GOOD).encode() + b"\n\xff\xfe\n")
    with pytest.raises(DataError, match=r"chats.jsonl:2: not UTF-8"):
        read_chats(path, CHAR)
    path.write_text("\n  \n")
    with pytest.raises(DataError, match="no conversations"):
        read_chats(path, CHAR)
    with pytest.raises(DataError, match="No such file"):
        read_chats(tmp_path / "missing.jsonl", CHAR)
    path.write_text(json.dumps(GOOD) + "\n\n" + json.dumps(GOOD))  # blank lines skipped, no final newline
    assert read_chats(path, CHAR) == [render(GOOD["messages"], CHAR)] * 2


# ------------------------------------------------------------------------------------------ the masked loss

def masked_loss_reference(params, config, examples):
    """Mean over every trained target of -log softmax, each conversation run alone (no padding), float64."""
    total, n = 0.0, 0
    for x, y in examples:
        logits, _ = gpt_forward(params, x[None], config)
        z = logits[0].astype(np.float64)
        logp = z - z.max(-1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
        for t in np.nonzero(y != IGNORE)[0]:
            total -= logp[t, y[t]]
            n += 1
    return total / n


def chat_examples(rng, count, block):
    examples = []
    while len(examples) < count:
        e = to_example(*render(random_messages(rng), CHAR), block)
        if e is not None:
            examples.append(e)
    return examples


def test_masked_loss_and_gradient_equal_the_reference():
    config = GPTConfig(vocab_size=CHAR.vocab_size, block_size=40, n_embd=8, n_layer=2, n_head=2)
    params = perturbed_params(config, dtype=np.float64)
    rng = np.random.default_rng()
    examples = chat_examples(rng, 5, 40)
    x, y = pad(examples)
    loss, grads = loss_and_grads(params, config, x, y)
    assert loss == pytest.approx(masked_loss_reference(params, config, examples), rel=1e-12)
    for name in ("wte.weight", "h.1.mlp.c_fc.weight", "h.0.attn.c_attn.bias"):  # central differences, 3 entries
        for _ in range(3):
            index = tuple(int(rng.integers(0, s)) for s in params[name].shape)
            if name == "wte.weight":
                index = (int(rng.choice(np.unique(x))),) + index[1:]
            old, eps = params[name][index], 1e-5
            params[name][index] = old + eps
            up = masked_loss_reference(params, config, examples)
            params[name][index] = old - eps
            down = masked_loss_reference(params, config, examples)
            params[name][index] = old
            assert grads[name][index] == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-9), (name, index)


def test_shards_weigh_their_trained_targets():
    """Shards hold different numbers of trained targets (one none at all): their sum is still the batch's."""
    config = GPTConfig(vocab_size=CHAR.vocab_size, block_size=40, n_embd=8, n_layer=1, n_head=2)
    params = perturbed_params(config, dtype=np.float64)
    rng = np.random.default_rng()
    x, y = pad(chat_examples(rng, 6, 40))
    y[2:4] = IGNORE  # the second shard of two rows trains nothing
    whole, g_whole = loss_and_grads(params, config, x, y)
    with worker_pool(2) as pool:
        sharded, g_sharded = loss_and_grads(params, config, x, y, shard_tokens=2 * x.shape[1], pool=pool)
    assert sharded == pytest.approx(whole, rel=1e-12)
    for k in g_whole:
        assert_close(g_sharded[k], g_whole[k], 1e-12, name=k)
    with pytest.raises(DataError, match="without a single trained target"):
        loss_and_grads(params, config, x, np.full_like(y, IGNORE))


def test_grown_vocabulary_keeps_the_old_logits():
    base = CharTokenizer.train(ALPHABET)
    config = GPTConfig(vocab_size=base.vocab_size, block_size=16, n_embd=8, n_layer=1, n_head=2)
    params = perturbed_params(config, dtype=np.float64)
    grown, grown_config = grow_vocab(params, config, CHAR.vocab_size)
    assert grown_config.vocab_size == CHAR.vocab_size and config.vocab_size == base.vocab_size
    wte = grown["wte.weight"]
    assert_close(wte[:base.vocab_size], params["wte.weight"], 0.0)
    assert_close(wte[base.vocab_size:], np.tile(params["wte.weight"].mean(0), (2, 1)), 1e-15)
    idx = np.random.default_rng().integers(0, base.vocab_size, (2, 9))
    old, _ = gpt_forward(params, idx, config)
    new, _ = gpt_forward(grown, idx, grown_config)
    assert_close(new[..., :base.vocab_size], old, 1e-12)


def test_chat_batches_split_and_pad():
    rng = np.random.default_rng()
    chats = [render(random_messages(rng), CHAR) for _ in range(40)]
    chats.append(render([{"role": "user", "content": "a " * 30}, {"role": "assistant", "content": "b"}], CHAR))
    tc = TrainConfig(batch_size=4, eval_iters=3, val_fraction=0.25, seed=5)
    batches = ChatBatches(chats, 24, tc)
    assert batches.dropped >= 1 and batches.cut >= 1  # the long user turn leaves nothing of the reply
    assert len(batches.train) + len(batches.val) + batches.dropped == 41
    assert len(batches.val) == round((41 - batches.dropped) * 0.25)
    x, y = batches.draw(np.random.default_rng(0))
    assert x.shape[0] == 4 and x.shape == y.shape and x.shape[1] <= 24 and np.any(y != IGNORE)
    evals = batches.eval_batches()
    assert len(evals["train"]) == 3 and sum(b[0].shape[0] for b in evals["val"]) == min(12, len(batches.val))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(evals["train"], batches.eval_batches()["train"]))
    with pytest.raises(DataError, match="too few to train on"):
        ChatBatches(chats[-1:], 24, tc)


# ------------------------------------------------------------------------------------------ end to end

def test_generate_stops_at_a_stop_token():
    config = GPTConfig(vocab_size=CHAR.vocab_size, block_size=32, n_embd=8, n_layer=1, n_head=2)
    params = perturbed_params(config)
    prompt = render([{"role": "user", "content": "hi"}], CHAR, add_generation_prompt=True)[0][-20:]
    free = generate(params, config, prompt, 12, temperature=0)
    stop = free[4]
    assert generate(params, config, prompt, 12, temperature=0, stop=(stop,)) == free[:free.index(stop) + 1]


def test_fine_tuned_model_answers_in_the_template(tmp_path):
    """A model pre-trained on plain text, fine-tuned to answer "Reply as NAME." with "NAME: yes": its greedy
    reply to a new message is that line and <|im_end|>; the user turns were never trained, so it has not learnt
    them (their loss stays high)."""
    rng = np.random.default_rng(0)
    names = ["ROMEO", "JULIET", "NURSE", "TYBALT"]
    text = " ".join(rng.choice(["thou", "art", "speak", "what", "night"], 3000)) + ALPHABET
    tok = CharTokenizer.train(text)
    config = GPTConfig(vocab_size=tok.vocab_size, block_size=80, n_embd=32, n_layer=2, n_head=4)
    quiet = dict(log=lambda s: None)
    train(np.array(tok.encode(text)), config, TrainConfig(batch_size=8, iters=60, lr=3e-3, eval_interval=60,
                                                         eval_iters=1, seed=1), tok, out_dir=tmp_path / "base",
          **quiet)
    chats = tmp_path / "chats.jsonl"
    with open(chats, "w") as f:
        for _ in range(200):
            who = rng.choice(names)
            said = " ".join(rng.choice(["thou", "art", "speak", "what"], 2))
            f.write(json.dumps({"messages": [{"role": "user", "content": f"{said}\nReply as {who}."},
                                             {"role": "assistant", "content": f"{who}: yes"}]}) + "\n")
    tc = TrainConfig(batch_size=16, iters=150, lr=1e-2, eval_interval=150, eval_iters=2, val_fraction=0.1, seed=2)
    result = sft(tmp_path / "base", chats, tmp_path / "chat", tc, **quiet)
    first, last = result["history"][0]["val_loss"], result["history"][-1]["val_loss"]
    assert last < 0.05 * first
    from npminilm.decoder.checkpoint import load_checkpoint

    params, config, chat_tok, _, _, _ = load_checkpoint(tmp_path / "chat")
    assert chat_tok.special == [IM_START, IM_END] and config.vocab_size == tok.vocab_size + 2
    for who in names:
        messages = [{"role": "user", "content": f"night art\nReply as {who}."}]
        prompt, _ = render(messages, chat_tok, True)
        reply = generate(params, config, prompt, 20, temperature=0, stop=(chat_tok.special_id(IM_END),))
        assert chat_tok.decode(reply) == f"{who}: yes{IM_END}"
        # "Reply as " is in every user turn, never in the pre-training text: untrained, it stays unpredictable
        ids, trained = render(messages + [{"role": "assistant", "content": f"{who}: yes"}], chat_tok)
        logits, _ = gpt_forward(params, np.array([ids[:-1]]), config)
        z = logits[0] - logits[0].max(-1, keepdims=True)
        nll = -(z - np.log(np.exp(z).sum(-1, keepdims=True)))[np.arange(len(ids) - 1), ids[1:]]
        span = chat_tok.encode("Reply as ")
        at = next(k for k in range(len(ids)) if ids[k:k + len(span)] == span)
        user_part = nll[at - 1:at - 1 + len(span)]  # nll[k] is token k + 1's
        assert user_part.mean() > 1.0 and nll[np.array(trained[1:])].mean() < 0.1, (user_part.mean(), who)
    with pytest.raises(UsageError, match="new folder"):
        sft(tmp_path / "base", chats, tmp_path / "base", tc, **quiet)


def test_a_resumed_fine_tuning_equals_the_uninterrupted_one(tmp_path):
    text = "thou art what night speak " * 40 + ALPHABET
    tok = CharTokenizer.train(text)
    config = GPTConfig(vocab_size=tok.vocab_size, block_size=40, n_embd=16, n_layer=1, n_head=2, dropout=0.1)
    train(np.array(tok.encode(text)), config, TrainConfig(batch_size=4, iters=4, eval_interval=4, eval_iters=1),
          tok, out_dir=tmp_path / "base", log=lambda s: None)
    rng = np.random.default_rng()
    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(json.dumps({"messages": random_messages(rng, 2, False)}) + "\n" for _ in range(30)))
    tc = TrainConfig(batch_size=4, iters=8, lr=1e-2, eval_interval=3, eval_iters=2, val_fraction=0.2, seed=4)
    whole = sft(tmp_path / "base", chats, tmp_path / "a", tc, log=lambda s: None)
    first = sft(tmp_path / "base", chats, tmp_path / "b", tc, log=lambda s: None, stop_at=5)
    lines = []
    resumed = sft(tmp_path / "base", chats, tmp_path / "b", TrainConfig(iters=8), resume=True, log=lines.append)
    assert any(line.startswith(f"resumed from {tmp_path / 'b'} at step 5") for line in lines)
    assert first["losses"] + resumed["losses"] == whole["losses"]
    assert [h for h in resumed["history"] if h["step"] != 5] == whole["history"]  # plus the eval at the cut
    assert all(np.array_equal(whole["params"][k], resumed["params"][k]) for k in whole["params"])
