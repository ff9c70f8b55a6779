"""PNG plots of a training log (JSON lines) and of a table of runs, with matplotlib's Agg backend.

A training log holds one JSON object per line: ``{"kind": "train", "step",
"lr", "total", "losses": {task: L}, "sigma": {task: sigma}, ...}`` every few
steps and ``{"kind": "val", "step", "metrics": {...}}`` after each validation.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

METRIC_LABELS = {
    "miou": "mIoU [%]",
    "instance_error": "instance mean error [px]",
    "depth_error": "inverse depth mean error [px]",
}


# The training plot shows the metrics in the units of log.jsonl and the printed JSON.
LOG_METRIC_LABELS = {**METRIC_LABELS, "miou": "mIoU (fraction, 1 = perfect)"}


def _figure(nrows=1, ncols=1, figsize=(7, 4), **kw):
    # A bare Figure renders with the Agg canvas on savefig: no pyplot state, no global backend switch.
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kw)


def read_log(path: str | os.PathLike) -> list[dict]:
    """Records of a JSON-lines log; a truncated last line (a kill mid-write) is skipped."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def _series(records, kind, field):
    """{name: (steps, values)} for dict-valued ``field`` of records of ``kind``."""
    out: dict[str, tuple[list, list]] = {}
    for r in records:
        if r.get("kind") != kind:
            continue
        for name, value in (r.get(field) or {}).items():
            if isinstance(value, (int, float)) and value is not None:
                steps, values = out.setdefault(name, ([], []))
                steps.append(r["step"])
                values.append(value)
    return out


def plot_training(log_path: str | os.PathLike, out_dir: str | os.PathLike) -> list[Path]:
    """Write losses.png, sigmas.png and (after any validation) metrics.png; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = read_log(log_path)
    written = []

    losses = _series(records, "train", "losses")
    totals = [(r["step"], r["total"]) for r in records if r.get("kind") == "train" and "total" in r]
    if losses or totals:
        fig, ax = _figure(figsize=(8.5, 4))
        for name, (steps, values) in losses.items():
            ax.plot(steps, values, label=name)
        if totals:
            ax.plot(*zip(*totals), label="total (weighted)", color="black", lw=1, alpha=0.6)
        if all(v > 0 for _, vals in losses.values() for v in vals):
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title("training losses (per-task losses before weighting)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the curves, not on them
        ax.grid(alpha=0.3)
        written.append(_save(fig, out_dir / "losses.png"))

    sigmas = _series(records, "train", "sigma")
    if sigmas:
        fig, axes = _figure(1, len(sigmas), figsize=(4 * len(sigmas), 3.5), squeeze=False)
        for ax, (name, (steps, values)) in zip(axes[0], sigmas.items()):
            ax.plot(steps, values)
            ax.set_title(f"sigma {name}")
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        fig.suptitle("learned task uncertainty sigma = exp(s / 2)")
        written.append(_save(fig, out_dir / "sigmas.png"))

    metrics = _series(records, "val", "metrics")
    metrics = {k: v for k, v in metrics.items() if k in METRIC_LABELS}
    if metrics:
        fig, axes = _figure(1, len(metrics), figsize=(4 * len(metrics), 3.5), squeeze=False)
        for ax, (name, (steps, values)) in zip(axes[0], metrics.items()):
            ax.plot(steps, values, marker="o")  # the log's own units (mIoU a fraction), not rescaled
            ax.set_title(LOG_METRIC_LABELS[name])
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        fig.suptitle("validation (values as in log.jsonl; --eval-every N adds points during training)")
        written.append(_save(fig, out_dir / "metrics.png"))
    return written


def plot_table(rows: list[dict], path: str | os.PathLike) -> Path:
    """Bar charts of mIoU / instance error / depth error, one bar per row (``row["name"]``)."""
    names = [r["name"] for r in rows]
    fig, axes = _figure(1, 3, figsize=(15, 0.45 * len(rows) + 2), sharey=True)
    for ax, key in zip(axes, METRIC_LABELS):
        scale = 100.0 if key == "miou" else 1.0
        vals = [r.get(key) for r in rows]
        shown = [v * scale if v is not None and not math.isnan(v) else 0.0 for v in vals]
        bars = ax.barh(range(len(rows)), shown, color=["C0" if v is not None and not math.isnan(v) else "none" for v in vals])
        for bar, v in zip(bars, vals):
            if v is not None and not math.isnan(v):
                ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {v * scale:.2f}",
                        va="center", fontsize=8)
        ax.set_title(METRIC_LABELS[key] + (" (higher is better)" if key == "miou" else " (lower is better)"),
                     fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(rows)), names, fontsize=8)
    axes[0].invert_yaxis()
    return _save(fig, Path(path))


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
