"""``fastmtl eval``: the paper's metrics of a checkpoint, and optionally the official Cityscapes scores."""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from fastmtl.engine.evaluation import evaluate, evaluate_official, headline, load_model


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate a checkpoint (paper metrics and official Cityscapes)")
    p.add_argument("--checkpoint", required=True, help="training checkpoint (checkpoint.pt)")
    p.add_argument("--data", default=None, help="'synthetic' or a Cityscapes root (default: the run's data)")
    p.add_argument("--split", default="val")
    p.add_argument("--limit", type=int, default=None, help="first N images")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none")
    p.add_argument("--official", action="store_true",
                   help="also write Cityscapes-format predictions and run the official evaluation")
    p.add_argument("--grouping", choices=("fast", "optics"), default="fast", help="instance grouping method")
    p.add_argument("--out", default=None, help="where to write eval.json and predictions "
                                              "(default: <checkpoint dir>/eval-<split>)")
    p.set_defaults(func=_main)


def _main(args) -> int:
    from fastmtl.data.cityscapes import Cityscapes
    from fastmtl.engine.config import resolve_data

    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else (
        "cpu" if args.device == "auto" else args.device)
    model, cfg, size = load_model(args.checkpoint, device)
    if args.data is not None:
        cfg.data = args.data
    root = resolve_data(cfg)
    dataset = Cityscapes(root, args.split, size=size, tasks=cfg.tasks)
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / f"eval-{args.split}"
    metrics = evaluate(model, dataset, batch_size=args.batch_size, device=device, amp=args.amp,
                       limit=args.limit, progress=True)
    if args.official:
        metrics.update(evaluate_official(model, dataset, out, device=device, amp=args.amp, limit=args.limit,
                                         grouping={"method": args.grouping}))
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(_jsonable(metrics), indent=2) + "\n")
    print(json.dumps(_jsonable(headline(metrics)), indent=2))
    return 0


def _jsonable(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}
