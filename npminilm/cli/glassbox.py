"""The glass-box commands: gradcheck (every backward against finite differences) and trace (one text, stage by
stage)."""

from __future__ import annotations

import argparse
import json

from ..errors import NpMiniLMError, UsageError
from .common import EXIT_OK, EXIT_RUNTIME


def add_commands(sub, model_opt) -> None:
    """Add gradcheck and trace to the CLI's subparsers."""
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


def _op_name(text: str) -> str:
    from ..nn.gradcheck import OPS

    if text != "encoder" and text not in OPS:
        raise argparse.ArgumentTypeError(f"unknown op {text!r} (known: {', '.join(OPS)}, encoder)")
    return text


def cmd_gradcheck(args) -> int:
    from ..encoder.gradcheck import check_encoder
    from ..nn.gradcheck import OPS, check_op, format_table

    rows = []
    for name in dict.fromkeys(args.op or [*OPS, "encoder"]):  # once each, in the order given
        rows += check_encoder(seed=args.seed) if name == "encoder" else check_op(name, seed=args.seed)
    print(format_table(rows))
    failed = sum(not row["ok"] for row in rows)
    print(f"{len(rows) - failed} of {len(rows)} tensors within tolerance" + (f", {failed} FAILED" if failed else ""))
    return EXIT_RUNTIME if failed else EXIT_OK


def cmd_trace(args) -> int:
    import importlib.util

    from ..encoder.sentence_encoder import SentenceEncoder
    from ..encoder.trace import (
        attach_hf_diffs,
        format_trace,
        plot_attention,
        trace,
        trace_json,
    )

    encoder = SentenceEncoder(name_or_path=args.model, dtype=args.dtype)
    n_layers = encoder.bert_config.num_hidden_layers
    layer = n_layers - 1 if args.layer is None else args.layer
    if not 0 <= layer < n_layers:
        raise UsageError(f"--layer must be in [0, {n_layers - 1}], got {layer}")
    tokens, stages = trace(encoder, args.text)
    note = "transformers is not installed: no comparison with HF"
    if args.no_hf:
        note = "comparison with HF skipped (--no-hf)"
    elif importlib.util.find_spec("transformers") is not None:
        from ..encoder.hf_reference import hf_stages

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
