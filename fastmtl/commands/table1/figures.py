"""Figures of the table: per-row results with intervals, and the training curves behind them."""
from __future__ import annotations

import math
from pathlib import Path

from fastmtl.commands.table1 import protocol as P
from fastmtl.engine.plots import _figure, _save, read_log

PANELS = (("miou", "mIoU [%] (higher is better)", 100.0), ("instance_error", "instance error [px] (lower is better)", 1.0),
          ("depth_error", "depth error [px] (lower is better)", 1.0), ("delta_m", "Δm [%] vs single task (higher is better)", 100.0))
COLOURS = {"single": "0.45", "fixed": "C0", "grid": "C0", "uncertainty": "C3", "adaptive": "C2"}


def plot_rows(report: dict, rows: list[dict], path: Path) -> Path:
    """One panel per metric: seed mean and 95% interval per row, seeds as dots, floor and ceiling dashed."""
    fig, axes = _figure(1, len(PANELS), figsize=(18, 0.42 * len(rows) + 2.2), sharey=True)
    for ax, (metric, title, scale) in zip(axes, PANELS):
        for y, r in enumerate(rows):
            task = next((t for t, m in P.METRIC_OF_TASK.items() if m == metric), None)
            if task is not None and task not in r["tasks"]:
                continue
            if metric == "delta_m" and r["key"] in P.SINGLE.values():
                continue
            mean, half = r[metric]["mean_ci"]
            if mean is None or not math.isfinite(mean):
                continue
            colour = COLOURS[P.BY_KEY[r["source"]].group]
            ax.barh(y, mean * scale, color=colour, alpha=0.35)
            if half is not None and math.isfinite(half):
                ax.errorbar(mean * scale, y, xerr=half * scale, color=colour, capsize=3, lw=1.2)
            ax.plot([v * scale for v in r[metric]["values"] if v is not None and math.isfinite(v)],
                    [y] * sum(1 for v in r[metric]["values"] if v is not None and math.isfinite(v)),
                    "o", color=colour, ms=3)
        if metric != "delta_m":
            for name, style in (("floor", ":"), ("ceiling", "--")):
                v = report[name].get(metric)
                if v is not None and math.isfinite(v):
                    ax.axvline(v * scale, color="k", ls=style, lw=1, label=f"{name} {v * scale:.3g}")
            ax.legend(fontsize=7, loc="lower right")
        else:
            ax.axvline(0, color="k", lw=0.8)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(rows)), [f"{r['name']} (lr {r['lr']:g})" for r in rows], fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(f"Table 1, test split: mean and 95% interval over {report['settings']['seeds']} seeds "
                 "(dots: seeds)", fontsize=10)
    return _save(fig, path)


def _log(report: dict, key: str, seed: int = 0) -> list[dict]:
    job = report["runs"][key][seed]["job"]
    path = Path(job["out"]) / "log.jsonl"
    return [r for r in read_log(path) if r.get("kind") == "train"] if path.is_file() else []


def plot_training(report: dict, rows: list[dict], path: Path) -> Path:
    """Left: the single-task training losses (seed 0, chosen rate) over training, relative to their
    final value. Right: the log-variances of the uncertainty rows, with where each would settle."""
    from matplotlib.ticker import ScalarFormatter

    fig, (left, right) = _figure(1, 2, figsize=(16, 5), gridspec_kw={"width_ratios": (1, 1.15)})
    for key in P.SINGLE.values():
        if key not in report["runs"]:
            continue
        records = _log(report, key)
        if records:
            losses = [r["losses"][key] for r in records]
            tail = losses[-max(1, len(losses) // 10):]
            final = sum(tail) / len(tail)
            smooth = [sum(losses[max(0, i - 9):i + 1]) / len(losses[max(0, i - 9):i + 1]) for i in range(len(losses))]
            left.plot([r["step"] for r in records], [v / final for v in smooth], label=key, lw=1)
    left.set_yscale("log")
    left.yaxis.set_major_formatter(ScalarFormatter())
    left.yaxis.set_minor_formatter(ScalarFormatter())
    left.set_title("Single-task training loss (seed 0, smoothed over 10 logs)", fontsize=10)
    left.set_ylabel("loss / its mean over the last 10% of steps", fontsize=9)
    left.set_xlabel("step")
    left.grid(alpha=0.3)
    left.legend(fontsize=9)
    styles = {"semantic": "-", "instance": "--", "depth": ":"}
    for i, r in enumerate(row for row in rows if P.BY_KEY[row["source"]].group == "uncertainty"):
        records = _log(report, r["source"])
        balance = r["convergence"].get("s_balance", {})
        for task in r["tasks"]:
            steps = [rec["step"] for rec in records if task in (rec.get("log_var") or {})]
            values = [rec["log_var"][task] for rec in records if task in (rec.get("log_var") or {})]
            if not values:
                continue
            right.plot(steps, values, color=f"C{i}", ls=styles[task], lw=1,
                       label=f"{r['key']} {task}")
            if task in balance and balance[task] is not None and math.isfinite(balance[task]):
                right.plot([steps[-1]], [balance[task]], marker="x", color=f"C{i}", ms=7)
    right.set_title("Log-variances of the uncertainty rows (seed 0)", fontsize=10)
    right.set_ylabel("s = log sigma^2; x: log(c L / r), L the loss of the last 10%", fontsize=9)
    right.set_xlabel("step")
    right.grid(alpha=0.3)
    if right.lines:  # beside the axes, where no curve runs
        right.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return _save(fig, path)
