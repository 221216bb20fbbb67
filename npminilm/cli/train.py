"""The fit command: fine-tune a sentence encoder on pairs, triplets or scored pairs, NumPy only."""

from __future__ import annotations

from ..errors import UsageError
from .common import EXIT_OK, positive_float, positive_int


def add_commands(sub, model_opt) -> None:
    p = sub.add_parser("fit", parents=[model_opt], help="fine-tune the model on a CSV/JSONL file; write a "
                       "sentence-transformers folder")
    p.add_argument("--train", required=True, metavar="FILE", help="CSV or JSONL: anchor,positive[,negative] or "
                   "sentence1,sentence2,score (the STSb files as they are)")
    p.add_argument("--loss", choices=("mnrl", "mnrl-symmetric", "cosent", "cosine"), default="cosent")
    p.add_argument("--matryoshka", metavar="D1,D2,...", help="MatryoshkaLoss over these dimensions, e.g. "
                   "384,256,128,64")
    p.add_argument("--dev", metavar="FILE", help="dev set: Spearman for scored pairs, MRR@10 for pairs")
    p.add_argument("--epochs", type=positive_int, default=1)
    p.add_argument("--max-steps", type=positive_int, metavar="N", help="stop after N optimizer steps")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--lr", type=positive_float, default=2e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-score", type=float, metavar="S", help="MNRL on scored pairs: the positives are the "
                   "pairs scored at least S")
    p.add_argument("--eval-steps", type=positive_int, metavar="N", help="evaluate on --dev every N steps")
    p.add_argument("--save-steps", type=positive_int, metavar="N", help="checkpoint every N steps")
    p.add_argument("--no-dropout", action="store_true", help="train without dropout")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last")
    p.add_argument("--out", required=True, metavar="DIR", help="where the model folder goes")
    p.set_defaults(func=cmd_fit)


def _dims(text):
    try:
        dims = tuple(int(d) for d in text.split(","))
    except ValueError:
        raise UsageError(f"--matryoshka takes comma-separated integers, got {text!r}") from None
    return dims


def cmd_fit(args) -> int:
    from ..encoder.sentence_encoder import SentenceEncoder
    from ..finetune.data import read_examples

    train, dev = read_examples(args.train), None if args.dev is None else read_examples(args.dev)
    encoder = SentenceEncoder(args.model)
    config = {"loss": args.loss, "epochs": args.epochs, "max_steps": args.max_steps, "batch_size": args.batch_size,
              "lr": args.lr, "seed": args.seed, "min_score": args.min_score, "eval_steps": args.eval_steps,
              "save_steps": args.save_steps, "dropout": not args.no_dropout}
    if args.matryoshka:
        config["matryoshka_dims"] = _dims(args.matryoshka)
    history = encoder.fit(train, args.out, dev=dev, resume=args.resume, **config)
    last = next((h for h in reversed(history) if "score" in h), None)
    summary = f"; dev {last['metric']} {last['score']:.4f}" if last else ""
    print(f"wrote {args.out} after {history[-1]['step'] if history else 0} steps{summary}")
    return EXIT_OK
