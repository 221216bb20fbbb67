"""`npminilm lm train|sample|export` and `npminilm bpe train` end to end, in process: outputs and one-line errors."""

import json

import pytest

from npminilm import cli

TRAIN = ["--tokenizer", "char", "--n-embd", "16", "--n-layer", "1", "--n-head", "2", "--block-size", "16",
         "--batch-size", "4", "--iters", "6", "--eval-interval", "3", "--eval-iters", "2", "--log-interval", "3"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, data_dir):
    path = tmp_path_factory.mktemp("lm") / "corpus.txt"
    path.write_text((data_dir / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:3000])
    return path


@pytest.fixture(scope="module")
def checkpoint(corpus):
    out = corpus.parent / "ckpt"
    assert cli.main(["lm", "train", "--data", str(corpus), *TRAIN, "--out", str(out)]) == 0
    return out


def run(capsys, *argv):
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_train_writes_a_checkpoint_and_progress(corpus, tmp_path, capsys):
    status, out, err = run(capsys, "lm", "train", "--data", str(corpus), *TRAIN, "--out", str(tmp_path / "m"))
    assert status == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].startswith("3,000 characters -> 3,000 char tokens")
    assert any(line.startswith("step     6/6 | loss ") and line.endswith(" tok/s") for line in lines)
    assert lines[-1].startswith("step     6 | eval train ")
    names = {p.name for p in (tmp_path / "m").iterdir()}
    assert names == {"config.json", "tokenizer.json", "model.safetensors", "optimizer.safetensors",
                     "train_state.json"}
    status, out, _ = run(capsys, "lm", "train", "--data", str(corpus), *TRAIN[:-8], "--iters", "8",
                         "--out", str(tmp_path / "m"), "--resume")
    assert status == 0 and "resumed from" in out and "step     8/8" in out


def test_sample_streams_and_is_seeded(checkpoint, capsys):
    args = ["lm", "sample", str(checkpoint), "--prompt", "ROMEO:", "--max-new-tokens", "20", "--seed", "3",
            "--temperature", "0.9", "--top-k", "5", "--top-p", "0.95"]
    status, a, err = run(capsys, *args)
    assert status == 0 and err == "" and a.startswith("ROMEO:") and len(a) == len("ROMEO:") + 20 + 1
    assert run(capsys, *args)[1] == a
    status, greedy, _ = run(capsys, "lm", "sample", str(checkpoint), "--max-new-tokens", "10", "--temperature", "0")
    assert status == 0 and len(greedy) == 11


def test_bpe_train_and_use(corpus, tmp_path, capsys):
    status, out, _ = run(capsys, "bpe", "train", "--data", str(corpus), "--vocab-size", "270",
                         "--out", str(tmp_path / "bpe.json"))
    assert status == 0 and out.startswith("14 merges, vocabulary 270")
    assert json.loads((tmp_path / "bpe.json").read_text())["type"] == "bpe"
    args = ["lm", "train", "--data", str(corpus), *TRAIN, "--out", str(tmp_path / "m")]
    args[args.index("char")] = str(tmp_path / "bpe.json")
    status, out, _ = run(capsys, *args)
    assert status == 0 and "bpe tokens (vocab 270)" in out
    status, out, _ = run(capsys, "lm", "sample", str(tmp_path / "m"), "--prompt", "é😀", "--max-new-tokens", "5")
    assert status == 0 and out.startswith("é😀")


def test_export_writes_gpt2_folder(checkpoint, tmp_path, capsys):
    status, out, _ = run(capsys, "lm", "export", str(checkpoint), "--hf", str(tmp_path / "hf"))
    assert status == 0 and out.strip() == str(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["activation_function"] == "gelu"
    from safetensors.numpy import load_file

    tensors = load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert tensors["transformer.h.0.mlp.c_fc.weight"].shape == (16, 64)


@pytest.mark.parametrize("flags, model_type", [
    (["--norm", "rmsnorm", "--pos", "rope", "--ffn", "swiglu", "--n-kv-head", "1"], "llama"),
    (["--norm", "rmsnorm", "--pos", "rope", "--ffn", "swiglu", "--no-bias", "--moe-experts", "3", "--moe-top-k", "2",
      "--n-inner", "12"], "mixtral"),
    (["--norm", "rmsnorm", "--mixer", "mamba", "--mamba-d-state", "4"], "mamba"),
])  # fmt: skip
def test_components_train_sample_and_export(flags, model_type, corpus, tmp_path, capsys):
    status, out, err = run(capsys, "lm", "train", "--data", str(corpus), *TRAIN, *flags, "--out", str(tmp_path / "m"))
    assert status == 0 and err == "", err
    stored = json.loads((tmp_path / "m" / "config.json").read_text())["model"]
    assert stored["norm"] == "rmsnorm" and stored["mixer"] == ("mamba" if model_type == "mamba" else "attention")
    assert stored["pos"] == ("none" if model_type == "mamba" else "rope")
    if model_type != "mamba":  # SwiGLU's default 8C/3 to a multiple of 8, or --n-inner
        assert stored["n_inner"] == {"llama": 48, "mixtral": 12}[model_type]
    status, out, _ = run(capsys, "lm", "sample", str(tmp_path / "m"), "--prompt", "ROMEO", "--max-new-tokens", "20",
                         "--seed", "3")
    assert status == 0 and out.startswith("ROMEO") and len(out.rstrip("\n")) == 25
    status, again, _ = run(capsys, "lm", "sample", str(tmp_path / "m"), "--prompt", "ROMEO", "--max-new-tokens",
                           "20", "--seed", "3", "--no-kv-cache")
    assert status == 0 and again == out  # inside the block: the cache changes nothing
    status, out, _ = run(capsys, "lm", "export", str(tmp_path / "m"), "--hf", str(tmp_path / "hf"))
    hf = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert status == 0 and hf["model_type"] == model_type
    if model_type != "mamba":
        assert hf["intermediate_size"] == stored["n_inner"]


@pytest.mark.parametrize("case, message", [
    ("missing", "No such file or directory"),
    ("empty", "the corpus is empty"),
    ("block", "block size 4000 is larger than the data"),
    ("prompt", "text has characters the vocabulary lacks: '€'"),
    ("no_checkpoint", "no such checkpoint folder"),
    ("not_checkpoint", "not a language-model checkpoint"),
    ("vocab", "at least 256 ids"),
    ("resume_nothing", "not a language-model checkpoint"),
])  # fmt: skip
def test_bad_input_is_one_line_exit_1(case, message, corpus, checkpoint, tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("")
    argv = {
        "missing": ["lm", "train", "--data", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "o")],
        "empty": ["lm", "train", "--data", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "o")],
        "block": ["lm", "train", "--data", str(corpus), "--block-size", "4000", "--out", str(tmp_path / "o")],
        "prompt": ["lm", "sample", str(checkpoint), "--prompt", "ROMEO €"],
        "no_checkpoint": ["lm", "sample", str(tmp_path / "nothing")],
        "not_checkpoint": ["lm", "export", str(tmp_path), "--hf", str(tmp_path / "hf")],
        "vocab": ["bpe", "train", "--data", str(corpus), "--vocab-size", "100", "--out", str(tmp_path / "b.json")],
        "resume_nothing": ["lm", "train", "--data", str(corpus), "--out", str(tmp_path), "--resume"],
    }[case]
    status, out, err = run(capsys, *argv)
    assert status == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("npminilm: error: ") and message in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("argv", [["lm"], ["lm", "train", "--data", "x"], ["lm", "train", "--data", "x", "--out", "y",
                                  "--dropout", "1.5"], ["lm", "train", "--data", "x", "--out", "y", "--tokenizer", "wp"],
                                  ["bpe", "train", "--data", "x", "--out", "y"]])
def test_usage_errors_exit_2(argv, capsys, tmp_path):
    (tmp_path / "x").write_text("hello world " * 100)
    argv = [str(tmp_path / a) if a == "x" else a for a in argv]
    status, out, err = run(capsys, *argv)
    assert status == 2 and out == "" and err.count("\n") == 1 and err.startswith("npminilm: error: ")


def write_chats(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def chat_line(user, reply):
    return json.dumps({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]})


@pytest.fixture(scope="module")
def chat_base(corpus):
    """A checkpoint whose context holds a short conversation (25 tokens of template and user turn, and a reply)."""
    out = corpus.parent / "chat_base"
    assert cli.main(["lm", "train", "--data", str(corpus), *TRAIN, "--block-size", "40", "--out", str(out)]) == 0
    return out


def test_sft_then_chat(chat_base, tmp_path, capsys):
    chats = write_chats(tmp_path / "chats.jsonl", [chat_line("Speak.", "I will.")] * 30)
    args = ["lm", "sft", "--data", str(chats), "--from", str(chat_base), "--batch-size", "4", "--eval-interval",
            "3", "--eval-iters", "2", "--log-interval", "3", "--val-fraction", "0.1"]
    status, out, err = run(capsys, *args, "--iters", "4", "--out", str(tmp_path / "chat"))
    assert status == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == ("30 conversations: 27 to train on (216 assistant tokens), 3 held out; 0 cut to the "
                        "context of 40 tokens, 0 dropped (no assistant token left)")
    assert lines[-1].startswith("step     4 | eval train ")
    tok = json.loads((tmp_path / "chat" / "tokenizer.json").read_text())
    assert tok["special"] == ["<|im_start|>", "<|im_end|>"]
    status, out, _ = run(capsys, *args, "--iters", "6", "--out", str(tmp_path / "chat"), "--resume")
    assert status == 0 and "resumed from" in out and "step     6/6" in out
    sample = ["lm", "sample", str(tmp_path / "chat"), "--chat", "Speak.", "--seed", "2", "--max-new-tokens", "12"]
    status, reply, err = run(capsys, *sample)
    assert status == 0 and err == "" and "<|im_end|>" not in reply and "Speak." not in reply
    assert run(capsys, *sample)[1] == reply
    status, out, _ = run(capsys, *sample, "--system", "Be brief.")
    assert status == 0


@pytest.mark.parametrize("case, message, code", [
    ("bad_record", "chats.jsonl:2: message 1 has role 'bot'", 1),
    ("no_template", "has no chat template: fine-tune it with `npminilm lm sft` first", 2),
    ("same_out", "--out must be a new folder", 2),
    ("both_prompts", "give --prompt (plain text) or --chat", 2),
])  # fmt: skip
def test_sft_errors_are_one_line(case, message, code, checkpoint, tmp_path, capsys):
    chats = write_chats(tmp_path / "chats.jsonl", [chat_line("a", "b"),
                                                   '{"messages": [{"role": "bot", "content": "x"}]}'])
    argv = {
        "bad_record": ["lm", "sft", "--data", str(chats), "--from", str(checkpoint), "--out", str(tmp_path / "o")],
        "no_template": ["lm", "sample", str(checkpoint), "--chat", "hello"],
        "same_out": ["lm", "sft", "--data", str(chats), "--from", str(checkpoint), "--out", str(checkpoint)],
        "both_prompts": ["lm", "sample", str(checkpoint), "--chat", "hello", "--prompt", "ROMEO"],
    }[case]
    status, out, err = run(capsys, *argv)
    assert status == code and out == ""
    assert err.count("\n") == 1 and err.startswith("npminilm: error: ") and message in err, err
    assert not (tmp_path / "o").exists()
