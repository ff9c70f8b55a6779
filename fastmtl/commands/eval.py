"""``fastmtl eval``: the paper's metrics of a checkpoint, and optionally the official Cityscapes scores."""
from __future__ import annotations

import json
from pathlib import Path

from fastmtl.commands.options import positive_int
from fastmtl.engine import rundir
from fastmtl.engine.distributed import resolve_device
from fastmtl.engine.evaluation import evaluate, evaluate_official, headline, load_model
from fastmtl.engine.metrics import HIGHER_IS_BETTER, delta_m
from fastmtl.engine.strict_json import dumps


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate a checkpoint (paper metrics and official Cityscapes)")
    p.add_argument("--checkpoint", required=True, help="training checkpoint (checkpoint.pt)")
    p.add_argument("--data", default=None, help="'synthetic' or a Cityscapes root (default: the run's data)")
    p.add_argument("--split", default="val")
    p.add_argument("--limit", type=positive_int, default=None, help="first N images")
    p.add_argument("--batch-size", type=positive_int, default=4)
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

    import torch

    reference = read_reference(args.reference) if args.reference else None  # fail before evaluating
    device = str(resolve_device(("cuda" if torch.cuda.is_available() else "cpu")
                                if args.device == "auto" else args.device))
    model, cfg, size = load_model(args.checkpoint, device)
    if args.data is not None:
        cfg.data = args.data
    root = resolve_data(cfg)
    dataset = Cityscapes(root, args.split, size=size, tasks=cfg.tasks)
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / f"eval-{args.split}"
    metrics = evaluate(model, dataset, batch_size=args.batch_size, device=device, amp=args.amp,
                       limit=args.limit, progress=True)
    if reference is not None:
        metrics["delta_m"] = delta_m(metrics, reference)
    with rundir.recording(rundir.run_of(args.checkpoint), out):  # --overwrite of the run removes them
        if args.official:
            metrics.update(evaluate_official(model, dataset, out, device=device, amp=args.amp,
                                             limit=args.limit, grouping={"method": args.grouping}))
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(dumps(metrics, indent=2) + "\n")
    print(dumps(headline(metrics), indent=2))
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
