"""``fastmtl eval``: the paper's metrics of a checkpoint, and optionally the official Cityscapes scores."""
from __future__ import annotations

from pathlib import Path

from fastmtl.commands.options import positive_int
from fastmtl.engine import rundir
from fastmtl.engine.distributed import resolve_device
from fastmtl.engine.evaluation import evaluate, evaluate_official, headline, load_model
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
    p.set_defaults(func=_main)


def _main(args) -> int:
    from fastmtl.data.cityscapes import Cityscapes
    from fastmtl.engine.config import resolve_data

    import torch

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
    with rundir.recording(rundir.run_of(args.checkpoint), out):  # --overwrite of the run removes them
        if args.official:
            metrics.update(evaluate_official(model, dataset, out, device=device, amp=args.amp,
                                             limit=args.limit, grouping={"method": args.grouping}))
        out.mkdir(parents=True, exist_ok=True)
        (out / "eval.json").write_text(dumps(metrics, indent=2) + "\n")
    print(dumps(headline(metrics), indent=2))
    return 0
