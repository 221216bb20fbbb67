"""The language-model commands: `npminilm lm train|sft|sample|export` and `npminilm bpe train`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..decoder.config import FFNS, MIXERS, NORMS, POSITIONS
from ..errors import DataError, UsageError
from .common import EXIT_OK, positive_float, positive_int, unit_float


def add_commands(sub) -> None:
    """Add `lm` (train, sft, sample, export) and `bpe` (train) to the CLI's subparsers."""
    lm = sub.add_parser("lm", help="train, sample and export small GPT-style language models")
    lm_sub = lm.add_subparsers(dest="lm_command", metavar="LM_COMMAND", parser_class=type(lm))
    lm_sub.required = True

    p = lm_sub.add_parser("train", help="train a decoder (GPT-2 or Llama components) on a text file")
    p.add_argument("--data", required=True, metavar="FILE", help="UTF-8 text corpus")
    p.add_argument("--tokenizer", default="char", metavar="char|bpe|FILE",
                   help="char, bpe (trained on --data), or a tokenizer JSON from `npminilm bpe train`")
    p.add_argument("--vocab-size", type=positive_int, default=512, metavar="N", help="BPE vocabulary (default 512)")
    p.add_argument("--n-embd", type=positive_int, default=128, metavar="C")
    p.add_argument("--n-layer", type=positive_int, default=2, metavar="L")
    p.add_argument("--n-head", type=positive_int, default=4, metavar="NH")
    p.add_argument("--block-size", type=positive_int, default=64, metavar="T")
    p.add_argument("--dropout", type=unit_float, default=0.2, metavar="P")
    p.add_argument("--norm", choices=NORMS, default="layernorm", help="layernorm (GPT-2) or rmsnorm (Llama)")
    p.add_argument("--pos", choices=POSITIONS, default=None,
                   help="learned position embeddings, rope, or none (default: learned; none with --mixer mamba)")
    p.add_argument("--ffn", choices=FFNS, default="gelu", help="gelu (GPT-2) or swiglu (Llama)")
    p.add_argument("--n-kv-head", type=positive_int, default=None, metavar="NKV",
                   help="key/value heads, dividing --n-head (default: one per head; 1: multi-query)")
    p.add_argument("--n-inner", type=positive_int, default=None, metavar="H",
                   help="the feed-forward's (each expert's) width (default: 4C for gelu, 8C/3 for swiglu)")
    p.add_argument("--rope-theta", type=positive_float, default=10000.0, metavar="THETA")
    p.add_argument("--bias", action=argparse.BooleanOptionalAction, default=True,
                   help="biases on the linear layers (default: on, as GPT-2; Llama and Mixtral have none)")
    p.add_argument("--moe-experts", type=int, default=0, metavar="E",
                   help="a mixture of E SwiGLU experts for each feed-forward (needs --ffn swiglu; default 0: dense)")
    p.add_argument("--moe-top-k", type=positive_int, default=2, metavar="K", help="experts per token (default 2)")
    p.add_argument("--moe-aux-coef", type=float, default=0.01, metavar="W",
                   help="weight of the load-balancing loss (default 0.01)")
    p.add_argument("--mixer", choices=MIXERS, default="attention",
                   help="attention, or mamba: a selective state-space mixer, and no feed-forward")
    p.add_argument("--mamba-d-state", type=positive_int, default=16, metavar="N")
    p.add_argument("--mamba-d-conv", type=positive_int, default=4, metavar="K")
    p.add_argument("--mamba-expand", type=positive_int, default=2, metavar="X")
    p.add_argument("--lr", type=positive_float, default=3e-4, metavar="LR", help="peak learning rate")
    p.add_argument("--min-lr", type=float, default=None, metavar="LR", help="final learning rate (default lr/10)")
    p.add_argument("--warmup-iters", type=int, default=None, metavar="N", help="default min(100, iters/10)")
    p.add_argument("--weight-decay", type=float, default=0.1, metavar="WD")
    p.add_argument("--grad-clip", type=float, default=1.0, metavar="NORM", help="0 disables clipping")
    p.add_argument("--batch-size", type=positive_int, default=32, metavar="B")
    p.add_argument("--iters", type=positive_int, default=4000, metavar="N")
    p.add_argument("--eval-interval", type=positive_int, default=250, metavar="N")
    p.add_argument("--eval-iters", type=positive_int, default=20, metavar="N")
    p.add_argument("--log-interval", type=positive_int, default=10, metavar="N")
    p.add_argument("--seed", type=int, default=1337, metavar="S")
    p.add_argument("--out", required=True, metavar="DIR", help="checkpoint folder")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint in --out up to --iters")
    p.set_defaults(func=cmd_lm_train)

    p = lm_sub.add_parser("sft", help="supervised fine-tuning on chats (JSON Lines), the loss on the assistant's "
                                      "turns only")
    p.add_argument("--data", required=True, metavar="FILE",
                   help='one conversation per line: {"messages": [{"role": "user", "content": ...}, ...]}')
    p.add_argument("--from", dest="from_dir", required=True, metavar="RUN", help="the checkpoint to start from")
    p.add_argument("--out", required=True, metavar="DIR", help="checkpoint folder of the fine-tuned model")
    p.add_argument("--lr", type=positive_float, default=3e-4, metavar="LR", help="peak learning rate")
    p.add_argument("--min-lr", type=float, default=None, metavar="LR", help="final learning rate (default lr/10)")
    p.add_argument("--warmup-iters", type=int, default=None, metavar="N", help="default min(100, iters/10)")
    p.add_argument("--weight-decay", type=float, default=0.1, metavar="WD")
    p.add_argument("--grad-clip", type=float, default=1.0, metavar="NORM", help="0 disables clipping")
    p.add_argument("--batch-size", type=positive_int, default=16, metavar="B", help="conversations per step")
    p.add_argument("--iters", type=positive_int, default=1000, metavar="N")
    p.add_argument("--val-fraction", type=unit_float, default=0.05, metavar="F",
                   help="the file's last conversations held out (default 0.05)")
    p.add_argument("--eval-interval", type=positive_int, default=100, metavar="N")
    p.add_argument("--eval-iters", type=positive_int, default=10, metavar="N")
    p.add_argument("--log-interval", type=positive_int, default=10, metavar="N")
    p.add_argument("--seed", type=int, default=1337, metavar="S")
    p.add_argument("--resume", action="store_true",
                   help="continue the checkpoint in --out up to --iters, with its own settings")
    p.set_defaults(func=cmd_lm_sft)

    p = lm_sub.add_parser("sample", help="generate text from a checkpoint, streamed to stdout")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--prompt", default="", metavar="TEXT")
    p.add_argument("--chat", default=None, metavar="MESSAGE",
                   help="a user message: sample the assistant's reply in the chat template (a model from `lm sft`), "
                        "up to its <|im_end|>")
    p.add_argument("--system", default=None, metavar="TEXT", help="a system message before --chat's")
    p.add_argument("--max-new-tokens", type=positive_int, default=200, metavar="N")
    p.add_argument("--temperature", type=float, default=1.0, metavar="T", help="0 is greedy")
    p.add_argument("--top-k", type=positive_int, default=None, metavar="K")
    p.add_argument("--top-p", type=positive_float, default=None, metavar="P")
    p.add_argument("--seed", type=int, default=None, metavar="S")
    p.add_argument("--no-kv-cache", action="store_true", help="run the full forward for every token")
    p.set_defaults(func=cmd_lm_sample)

    p = lm_sub.add_parser("export", help="write a transformers GPT2LMHeadModel folder")
    p.add_argument("dir", metavar="DIR")
    p.add_argument("--hf", required=True, metavar="OUT", help="output folder")
    p.set_defaults(func=cmd_lm_export)

    bpe = sub.add_parser("bpe", help="byte-level BPE tokenizers")
    bpe_sub = bpe.add_subparsers(dest="bpe_command", metavar="BPE_COMMAND", parser_class=type(bpe))
    bpe_sub.required = True
    p = bpe_sub.add_parser("train", help="learn merges from a text file")
    p.add_argument("--data", required=True, metavar="FILE")
    p.add_argument("--vocab-size", type=positive_int, required=True, metavar="N")
    p.add_argument("--out", required=True, metavar="FILE", help="tokenizer JSON")
    p.set_defaults(func=cmd_bpe_train)


def _read_corpus(path) -> str:
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        text = f.read()
    if not text:
        raise DataError(f"{path}: the corpus is empty")
    return text


def _tokenizer(args, text):
    from ..decoder.tokenizers import ByteBPETokenizer, CharTokenizer, load_tokenizer

    if args.tokenizer == "char":
        return CharTokenizer.train(text)
    if args.tokenizer == "bpe":
        return ByteBPETokenizer.train(text, args.vocab_size)
    if Path(args.tokenizer).is_file():
        return load_tokenizer(args.tokenizer)
    raise UsageError(f"--tokenizer must be char, bpe or a tokenizer JSON file, got {args.tokenizer!r}")


def cmd_lm_train(args) -> int:
    import numpy as np

    from ..decoder.checkpoint import load_checkpoint
    from ..decoder.config import GPTConfig
    from ..decoder.model import param_shapes
    from ..decoder.train import TrainConfig, split_data, train

    text = _read_corpus(args.data)
    tc = TrainConfig(batch_size=args.batch_size, iters=args.iters, lr=args.lr, min_lr=args.min_lr,
                     warmup_iters=args.warmup_iters, weight_decay=args.weight_decay, grad_clip=args.grad_clip,
                     eval_interval=args.eval_interval, eval_iters=args.eval_iters, log_interval=args.log_interval,
                     seed=args.seed)
    if args.resume:
        _, config, tok, stored, _, _ = load_checkpoint(args.out)
        tc = TrainConfig.from_dict({**stored, "iters": args.iters})
    else:
        tok = _tokenizer(args, text)
        config = GPTConfig(vocab_size=tok.vocab_size, block_size=args.block_size, n_embd=args.n_embd,
                           n_layer=args.n_layer, n_head=args.n_head, dropout=args.dropout, norm=args.norm,
                           pos=args.pos or ("none" if args.mixer == "mamba" else "learned"), ffn=args.ffn,
                           n_kv_head=args.n_kv_head, n_inner=args.n_inner, rope_theta=args.rope_theta,
                           bias=args.bias, moe_experts=args.moe_experts, moe_top_k=args.moe_top_k,
                           moe_aux_coef=args.moe_aux_coef, mixer=args.mixer, mamba_d_state=args.mamba_d_state,
                           mamba_d_conv=args.mamba_d_conv, mamba_expand=args.mamba_expand)
    ids = np.asarray(tok.encode(text), dtype=np.int64)
    split_data(ids, tc.val_fraction, config.block_size)  # fail on a short corpus before printing anything
    n_params = sum(int(np.prod(s)) for s in param_shapes(config).values())
    print(f"{len(text):,} characters -> {ids.size:,} {tok.kind} tokens (vocab {tok.vocab_size}); "
          f"{n_params:,} parameters", flush=True)
    train(ids, config, tc, tok, out_dir=args.out, resume=args.resume, log=lambda s: print(s, flush=True))
    return EXIT_OK


def cmd_lm_sft(args) -> int:
    from ..decoder.sft import sft
    from ..decoder.train import TrainConfig

    tc = TrainConfig(batch_size=args.batch_size, iters=args.iters, lr=args.lr, min_lr=args.min_lr,
                     warmup_iters=args.warmup_iters, weight_decay=args.weight_decay, grad_clip=args.grad_clip,
                     eval_interval=args.eval_interval, eval_iters=args.eval_iters, log_interval=args.log_interval,
                     seed=args.seed, val_fraction=args.val_fraction)
    sft(args.from_dir, args.data, args.out, tc, resume=args.resume, log=lambda s: print(s, flush=True))
    return EXIT_OK


def cmd_lm_sample(args) -> int:
    from ..decoder.chat import IM_END, render
    from ..decoder.checkpoint import load_checkpoint
    from ..decoder.sampling import generate

    params, config, tok, _, _, _ = load_checkpoint(args.dir)
    stop = ()
    if args.chat is None:
        if args.system is not None:
            raise UsageError("--system goes with --chat")
        prompt = tok.encode(args.prompt)
        sys.stdout.write(args.prompt)
    else:
        if args.prompt:
            raise UsageError("give --prompt (plain text) or --chat (a user message), not both")
        if IM_END not in tok.special:
            raise UsageError(f"{args.dir} has no chat template: fine-tune it with `npminilm lm sft` first")
        messages = ([{"role": "system", "content": args.system}] if args.system is not None else []) + \
            [{"role": "user", "content": args.chat}]
        prompt, _ = render(messages, tok, add_generation_prompt=True)
        stop = (tok.special_id(IM_END),)
    sys.stdout.flush()
    feed = tok.decoder()

    def emit(token):
        if token not in stop:
            sys.stdout.write(feed(token))
            sys.stdout.flush()

    generate(params, config, prompt, args.max_new_tokens, args.temperature, args.top_k, args.top_p, args.seed,
             on_token=emit, use_cache=not args.no_kv_cache, stop=stop)
    sys.stdout.write("\n")
    return EXIT_OK


def cmd_lm_export(args) -> int:
    from ..decoder.export import export_hf

    print(export_hf(args.dir, args.hf))
    return EXIT_OK


def cmd_bpe_train(args) -> int:
    from ..decoder.tokenizers import ByteBPETokenizer, save_tokenizer

    tok = ByteBPETokenizer.train(_read_corpus(args.data), args.vocab_size)
    save_tokenizer(tok, args.out)
    print(f"{len(tok.merges)} merges, vocabulary {tok.vocab_size} -> {args.out}")
    return EXIT_OK
