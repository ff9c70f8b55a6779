"""``fastmtl experiment table1``: the rows of the paper's Table 1 under one equal budget.

Kendall, Gal and Cipolla (CVPR 2018), Table 1 compares, on Tiny Cityscapes,
single-task models, fixed weightings of the three losses and learned
uncertainty weighting of two and three tasks. Here every row trains the same
model preset for the same steps, batch size, optimiser, data and seed; only
the tasks and the weighting differ. The default budget fits a 2-core CPU in
about a quarter of an hour on the synthetic city; ``--quick`` is a
seconds-long smoke run whose numbers mean nothing.

Writes ``table1.md`` (markdown table and the settings), ``table1.json``,
``table1.png`` (bar charts) and one run directory per row (log, plots,
checkpoint).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from fastmtl.tasks import TASK_ORDER

ALL = TASK_ORDER


@dataclass(frozen=True)
class Row:
    key: str
    name: str
    tasks: tuple[str, ...]
    weighting: str
    weights: tuple[float, ...] | None = None


ROWS = (
    Row("semantic", "Segmentation only", ("semantic",), "single"),
    Row("instance", "Instance only", ("instance",), "single"),
    Row("depth", "Depth only", ("depth",), "single"),
    Row("unweighted", "Unweighted sum of losses", ALL, "equal"),
    Row("fixed", "Approx. optimal weights", ALL, "fixed", (0.89, 0.01, 0.1)),
    Row("unc-sem-inst", "2 task uncertainty weighting", ("semantic", "instance"), "uncertainty"),
    Row("unc-sem-depth", "2 task uncertainty weighting", ("semantic", "depth"), "uncertainty"),
    Row("unc-inst-depth", "2 task uncertainty weighting", ("instance", "depth"), "uncertainty"),
    Row("unc-all", "3 task uncertainty weighting", ALL, "uncertainty"),
)

# The default budget: measured at about 15 minutes in all on 2 CPU cores (docs/training.md).
DEFAULTS = dict(model="tiny", size="64x128", steps=500, batch_size=8, lr=2.5e-3, synthetic_n=200,
                val_limit=None, augment="flip", eval_every=0)
QUICK = dict(model="tiny", size="32x64", steps=2, batch_size=2, synthetic_n=8, val_limit=2,
             augment="none", eval_every=0)


def table1(out="runs/table1", *, quick: bool = False, rows=None, progress: bool = True, resume: bool = False,
           **overrides) -> dict:
    """Train and evaluate every row; write the table and plots; return {"rows", "seconds", "settings"}.

    ``resume``: continue each row from its run directory's checkpoint (a finished
    row is only evaluated again). Wall and CPU seconds are recorded per row.
    """
    from fastmtl.engine import TrainConfig, Trainer
    from fastmtl.engine.plots import plot_table

    settings = {**(QUICK if quick else DEFAULTS), **{k: v for k, v in overrides.items() if v is not None}}
    selected = [r for r in ROWS if rows is None or r.key in rows]
    if not selected:
        raise ValueError(f"no row selected; rows are {[r.key for r in ROWS]}")
    out = Path(out)
    results, started, cpu_started = [], time.time(), time.process_time()
    for row in selected:
        cfg = TrainConfig(out=str(out / row.key), tasks=row.tasks, weighting=row.weighting, weights=row.weights,
                          checkpoint_every=100, progress=progress, resume=resume, **settings)
        t0, c0 = time.time(), time.process_time()
        trainer = Trainer(cfg)
        summary = trainer.run()
        weighting = trainer.criterion.weighting
        results.append({
            "key": row.key, "name": row.name, "tasks": list(row.tasks), "weighting": row.weighting,
            "weights": _weights_cell(row, weighting), "seconds": time.time() - t0,
            "cpu_seconds": time.process_time() - c0,
            "miou": summary["metrics"].get("miou"),
            "instance_error": summary["metrics"].get("instance_error"),
            "depth_error": summary["metrics"].get("depth_error"),
            "sigma": weighting.sigmas() if hasattr(weighting, "sigmas") else None,
        })
    seconds, cpu_seconds = time.time() - started, time.process_time() - cpu_started
    out.mkdir(parents=True, exist_ok=True)
    report = {"rows": results, "seconds": seconds, "cpu_seconds": cpu_seconds, "settings": settings,
              "quick": quick, "threads": torch.get_num_threads()}
    (out / "table1.json").write_text(json.dumps(_nan_to_none(report), indent=2) + "\n")
    (out / "table1.md").write_text(markdown(results, settings, seconds, cpu_seconds))
    plot_table([{**r, "name": f"{r['name']} ({_tasks_short(r['tasks'])})"} for r in results], out / "table1.png")
    return report


def _weights_cell(row: Row, weighting) -> dict:
    if row.weighting == "uncertainty":
        return {t: "learned" for t in row.tasks}
    return {t: w for t, w in weighting.effective_weights().items()}


def _tasks_short(tasks) -> str:
    short = {"semantic": "sem", "instance": "inst", "depth": "depth"}
    return "+".join(short[t] for t in tasks)


def _fmt(value, scale=1.0, digits=2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value * scale:.{digits}f}"


def markdown(results: list[dict], settings: dict, seconds: float, cpu_seconds: float | None = None) -> str:
    """The paper's Table 1 layout: weights per task, then the three metrics."""
    lines = [
        "| Loss | Seg. weight | Inst. weight | Depth weight | Segmentation mIoU [%] ↑ "
        "| Instance mean error [px] ↓ | Inverse depth mean error [px] ↓ | final sigma (sem / inst / depth) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        w = r["weights"]
        cells = []
        for t in TASK_ORDER:
            v = w.get(t)
            cells.append("-" if v is None else ("learned" if v == "learned" else f"{v:g}"))
        sigma = r.get("sigma")
        sig = " / ".join(_fmt(sigma.get(t), digits=3) if t in sigma else "-" for t in TASK_ORDER) if sigma else "-"
        lines.append(f"| {r['name']} | {' | '.join(cells)} | {_fmt(r['miou'], 100.0, 1)} "
                     f"| {_fmt(r['instance_error'])} | {_fmt(r['depth_error'], digits=3)} | {sig} |")
    budget = ", ".join(f"{k}={v}" for k, v in settings.items())
    lines += [
        "",
        f"Every row: {budget}; SGD Nesterov momentum 0.9, poly decay 0.9, weight decay 1e-4. "
        f"Total wall time {seconds / 60:.1f} min"
        + (f" ({cpu_seconds / 60:.1f} min of CPU time over {torch.get_num_threads()} threads)."
           if cpu_seconds is not None else "."),
        "Instance mean error: mean L2 length of the offset-vector error over instance pixels. "
        "Inverse depth mean error: mean absolute disparity error over pixels with a measurement.",
        "",
    ]
    return "\n".join(lines)


def _nan_to_none(obj):
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


# --- command line ---------------------------------------------------------------------------

def register(subparsers) -> None:
    p = subparsers.add_parser("experiment", help="reproduce experiments of the paper")
    sub = p.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    t = sub.add_parser("table1", help="Table 1: single task, fixed weights and uncertainty weighting, equal budgets",
                       description="Train every row of the paper's Table 1 with the same budget and write "
                                   "OUT/table1.md, table1.json and table1.png. Defaults: "
                                   + ", ".join(f"{k}={v}" for k, v in DEFAULTS.items()))
    t.add_argument("--out", default="runs/table1")
    t.add_argument("--quick", action="store_true", help="a seconds-long smoke run (numbers are meaningless)")
    t.add_argument("--rows", default=None, help="comma-separated subset of " + ",".join(r.key for r in ROWS))
    t.add_argument("--data", default=None, help="'synthetic' (default) or a Cityscapes root")
    for name, typ in (("model", str), ("size", str), ("steps", int), ("batch-size", int), ("lr", float),
                      ("synthetic-n", int), ("val-limit", int), ("seed", int), ("workers", int),
                      ("device", str), ("amp", str)):
        t.add_argument(f"--{name}", type=typ, default=None)
    t.add_argument("--resume", action="store_true", help="continue rows from their checkpoints")
    t.add_argument("--no-progress", dest="progress", action="store_false")
    t.set_defaults(func=_main)


def _main(args) -> int:
    overrides = {k: getattr(args, k) for k in ("data", "model", "size", "steps", "batch_size", "lr",
                                               "synthetic_n", "val_limit", "seed", "device", "amp")}
    overrides["num_workers"] = args.workers
    rows = None if args.rows is None else [r.strip() for r in args.rows.split(",") if r.strip()]
    report = table1(args.out, quick=args.quick, rows=rows, progress=args.progress, resume=args.resume,
                    **overrides)
    print(Path(args.out, "table1.md").read_text())
    print(f"wrote {Path(args.out) / 'table1.md'}, table1.json, table1.png ({report['seconds']:.0f} s)")
    return 0


__all__ = ["ROWS", "Row", "table1", "markdown", "DEFAULTS", "QUICK"]
