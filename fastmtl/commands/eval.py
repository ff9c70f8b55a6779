"""``fastmtl eval``: the paper's metrics of a checkpoint, and optionally the official Cityscapes scores."""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from fastmtl.engine.evaluation import evaluate, evaluate_official, headline, load_model
from fastmtl.engine.metrics import HIGHER_IS_BETTER, delta_m


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
    p.add_argument("--reference", nargs="+", default=None, metavar="JSON",
                   help="single-task metrics (eval.json of single-task runs, or JSON objects with miou, "
                        "instance_error, depth_error): adds delta_m, the mean sign-corrected relative "
                        "change against them")
    p.set_defaults(func=_main)


def _main(args) -> int:
    from fastmtl.data.cityscapes import Cityscapes
    from fastmtl.engine.config import resolve_data

    reference = read_reference(args.reference) if args.reference else None  # fail before evaluating
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
    if reference is not None:
        metrics["delta_m"] = delta_m(metrics, reference)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(_jsonable(metrics), indent=2) + "\n")
    print(json.dumps(_jsonable(headline(metrics)), indent=2))
    return 0


def read_reference(paths) -> dict[str, float]:
    """The single-task metrics of ``paths`` (JSON objects) merged; a metric given twice must agree."""
    merged: dict[str, float] = {}
    for path in paths:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read reference metrics {path}: {e}") from None
        if not isinstance(data, dict):
            raise ValueError(f"reference metrics {path} must hold a JSON object, not {type(data).__name__}")
        for key in HIGHER_IS_BETTER:
            value = data.get(key)
            if value is None:
                continue
            if key in merged and merged[key] != value:
                raise ValueError(f"reference metric {key} given twice with different values "
                                 f"({merged[key]} and {value} in {path})")
            merged[key] = float(value)
    if not merged:
        raise ValueError(f"no reference metric ({', '.join(HIGHER_IS_BETTER)}) in {', '.join(map(str, paths))}")
    return merged


def _jsonable(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}
