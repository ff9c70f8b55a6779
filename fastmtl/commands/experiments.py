"""``fastmtl experiment table1``: the rows of the paper's Table 1, each at its best learning rate, over seeds.

Kendall, Gal and Cipolla (CVPR 2018), Table 1 compares, on Tiny Cityscapes,
single-task models, fixed weightings of the three losses and learned
uncertainty weighting of two and three tasks. Here each row trains the same
network on the same data for the same steps; every row gets the same
learning-rate sweep (chosen on a validation split), three seeds, and is
reported on a test split with 95% intervals, paired differences and delta-m
against the single-task rows, beside the field's DWA, RLW and GradNorm, a
no-image floor and the ceiling of the head resolution
(``fastmtl.commands.table1.protocol`` has the details). The default is a CPU
run of 66 CPU-minutes (about 33 minutes of two idle cores); ``--gpu`` is the paper-scale run;
``--quick`` is a seconds-long smoke run whose numbers mean nothing.

Writes OUT/table1.md, table1.json, table1.png, table1-training.png and
OUT/runs/<row>/lr<rate>-seed<seed>/ (log, result.json) per run.
"""
from __future__ import annotations

import sys
from pathlib import Path

from fastmtl.commands.table1 import CPU, GPU, QUICK, ROWS, Row, read_report, table1
from fastmtl.commands.table1.protocol import GRID_KEY


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.replace(",", " ").split())


def _size(text: str) -> tuple[int, int]:
    import argparse

    from fastmtl.data.cityscapes import resolve_size

    try:
        size = resolve_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if size is None:
        raise argparse.ArgumentTypeError(f"expected HxW or tiny/half/full, got {text!r}")
    return size


def _describe(settings: dict) -> str:
    keys = ("model", "width", "size", "steps", "batch_size", "lrs", "extend", "seeds", "splits", "device", "workers")
    return ", ".join(f"{k}={settings[k]}" for k in keys)


def register(subparsers) -> None:
    p = subparsers.add_parser("experiment", help="reproduce experiments of the paper")
    sub = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    t = sub.add_parser(
        "table1", help="Table 1: single task, fixed weights, uncertainty weighting, DWA, RLW, GradNorm",
        description="Train every row of the paper's Table 1 (each at its best rate of one learning-rate sweep, "
                    "chosen on the validation split, over several seeds) and write OUT/table1.md, table1.json, "
                    "table1.png and table1-training.png. Finished runs under OUT/runs are reused. "
                    f"CPU default: {_describe(CPU)}. --gpu: {_describe(GPU)}.")
    t.add_argument("--out", default="runs/table1")
    mode = t.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a seconds-long smoke run (numbers are meaningless)")
    mode.add_argument("--gpu", action="store_true", help="the paper-scale run: 128x256, ResNet-18, 4000 steps, CUDA")
    t.add_argument("--rows", default=None,
                   help="comma-separated subset of " + ",".join([r.key for r in ROWS] + [GRID_KEY])
                        + " (the single-task rows always run)")
    t.add_argument("--data", default=None, help="a Cityscapes-layout root with labelled train, val and test splits "
                                                "(default: the synthetic city)")
    t.add_argument("--size", type=_size, default=None, help="HxW (the synthetic city is generated at this size)")
    t.add_argument("--lrs", type=_floats, default=None, help="the learning-rate sweep, e.g. 0.05,0.1,0.2")
    for name, typ in (("model", str), ("width", int), ("steps", int), ("batch-size", int), ("seeds", int),
                      ("extend", int), ("workers", int), ("threads", int), ("device", str), ("data-seed", int)):
        t.add_argument(f"--{name}", type=typ, default=None)
    t.set_defaults(func=_main)


def _main(args) -> int:
    overrides = {k: getattr(args, k) for k in ("data", "size", "lrs", "model", "width", "steps", "batch_size",
                                               "seeds", "extend", "workers", "threads", "device", "data_seed")}
    rows = None if args.rows is None else [r.strip() for r in args.rows.split(",") if r.strip()]
    report = table1(args.out, quick=args.quick, gpu=args.gpu, rows=rows, **overrides)
    print(Path(args.out, "table1.md").read_text())
    print(f"wrote {Path(args.out) / 'table1.md'}, table1.json, table1.png, table1-training.png "
          f"({report['seconds'] / 60:.1f} min)", file=sys.stderr)
    return 0


__all__ = ["CPU", "GPU", "QUICK", "ROWS", "Row", "read_report", "table1"]
