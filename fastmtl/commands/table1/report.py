"""The table's numbers: per-row means and intervals over seeds, paired differences, delta-m; markdown and JSON."""
from __future__ import annotations

import json
import math
from pathlib import Path

from fastmtl.commands.table1 import protocol as P
from fastmtl.engine.metrics import delta_m
from fastmtl.engine.stats import mean_interval, paired_difference
from fastmtl.tasks import TASK_ORDER

METRICS = ("miou", "instance_error", "depth_error")
SCALE = {"miou": 100.0, "instance_error": 1.0, "depth_error": 1.0, "delta_m": 100.0}
DIGITS = {"miou": 1, "instance_error": 2, "depth_error": 3, "delta_m": 1}


def _value(result: dict, metric: str) -> float:
    v = result["test"].get(metric)
    return math.nan if v is None else float(v)


def _single_reference(runs: dict, seed: int) -> dict:
    ref = {}
    for task, key in P.SINGLE.items():
        if key in runs and seed < len(runs[key]):
            ref[P.METRIC_OF_TASK[task]] = _value(runs[key][seed], P.METRIC_OF_TASK[task])
    return ref


def row_statistics(report: dict) -> list[dict]:
    """One entry per reported row: name, weights, rate, per-seed test metrics and delta-m, means and
    intervals, and paired differences against the single-task rows."""
    runs, rows = report["runs"], []
    order = [r.key for r in P.ROWS if r.key in runs and r.group != "grid"]
    if report.get("grid"):
        order.insert(order.index("paper") + 1 if "paper" in order else len(order), P.GRID_KEY)
    for key in order:
        source = report["grid"] if key == P.GRID_KEY else key
        row, results = P.BY_KEY[source], runs[source]
        entry = {"key": key, "source": source, "tasks": list(row.tasks), "lr": report["rate"][source],
                 "name": f"Grid search best: {row.name.lower()}" if key == P.GRID_KEY else row.name,
                 "weights": _weights(row), "seeds": [r["job"]["seed"] for r in results]}
        for metric in METRICS:
            values = [_value(r, metric) for r in results]
            entry[metric] = {"values": values, "mean_ci": mean_interval(values)}
            task = next(t for t, m in P.METRIC_OF_TASK.items() if m == metric)
            if task in row.tasks and row.group != "single" and P.SINGLE[task] in runs:
                ref = [_value(runs[P.SINGLE[task]][i], metric) for i in range(len(results))
                       if i < len(runs[P.SINGLE[task]])]
                entry[metric]["paired"] = paired_difference(values[: len(ref)], ref)
        dm = []
        for r in results:
            try:
                dm.append(delta_m(r["test"], _single_reference(runs, r["job"]["seed"])))
            except ValueError:
                dm.append(math.nan)
        entry["delta_m"] = {"values": dm, "mean_ci": mean_interval(dm)}
        entry["convergence"] = _convergence([r["convergence"] for r in results])
        entry["task_rate"] = _task_rates(results)
        entry["final_weights"] = [r["weights"] for r in results]
        rows.append(entry)
    # The paper's claim is about three tasks: each 3-task row's delta-m against 3-task uncertainty's, seed by seed.
    uncertainty = next((r for r in rows if r["key"] == "unc-all"), None)
    for r in rows:
        if uncertainty is not None and r is not uncertainty and len(r["tasks"]) == 3:
            r["delta_m"]["vs_uncertainty"] = paired_difference(r["delta_m"]["values"], uncertainty["delta_m"]["values"])
    return rows


def _task_rates(results: list[dict]) -> dict:
    """Each task's learning rate times its weight, averaged over the logged steps and the seeds: the
    step size the task's gradient actually gets (the schedule is the same for every row)."""
    from fastmtl.engine.plots import read_log

    per_seed = []
    for r in results:
        path = Path(r["job"]["out"]) / "log.jsonl"
        records = [x for x in read_log(path) if x.get("kind") == "train"] if path.is_file() else []
        if records:
            per_seed.append({t: sum(x["lr"] * x["weight"][t] for x in records) / len(records)
                             for t in r["job"]["tasks"]})
    return {t: sum(d[t] for d in per_seed) / len(per_seed) for t in per_seed[0]} if per_seed else {}


def _weights(row: P.Row) -> dict:
    if row.weighting == "single":
        return {row.tasks[0]: 1.0}
    if row.weighting == "equal":
        return {t: round(1 / len(row.tasks), 4) for t in row.tasks}
    if row.weighting == "fixed":
        return dict(zip(row.tasks, row.weights))
    return {t: {"uncertainty": "learned", "dwa": "DWA", "rlw": "random", "gradnorm": "GradNorm"}[row.weighting]
            for t in row.tasks}


def _convergence(items: list[dict]) -> dict:
    """Seed means of the last-10% statistics."""
    out = {}
    for field in ("loss_change", "s_change", "s_final", "s_balance"):
        tasks = {t for c in items for t in (c.get(field) or {})}
        if tasks:
            out[field] = {t: mean_interval([(c.get(field) or {}).get(t) for c in items])[0] for t in tasks}
    return out


def _cell(stat: dict | None, metric: str) -> str:
    if stat is None:
        return "-"
    mean, half = stat["mean_ci"] if "mean_ci" in stat else stat
    if mean is None or not math.isfinite(mean):
        return "-"
    s, d = SCALE[metric], DIGITS[metric]
    return f"{mean * s:.{d}f}" + (f" ± {half * s:.{d}f}" if half is not None and math.isfinite(half) else "")


def _plain_cell(value, metric) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value * SCALE[metric]:.{DIGITS[metric]}f}"


def markdown(report: dict, rows: list[dict]) -> str:
    s = report["settings"]
    n = s["seeds"]
    single_means = {P.METRIC_OF_TASK[t]: r[P.METRIC_OF_TASK[t]]["mean_ci"][0] for r in rows
                    if r["key"] in P.SINGLE.values() for t in r["tasks"]}
    lines = [f"Test split, mean ± 95% interval over {n} seed(s) (t distribution); delta-m against the "
             "single-task rows of the same seed, over the tasks a row predicts.", "",
             "| Row | Weights (sem / inst / depth) | lr | mIoU [%] ↑ | Instance error [px] ↓ "
             "| Depth error [px] ↓ | Δm [%] ↑ |", "| --- | --- | --- | --- | --- | --- | --- |"]

    def bound(name, metrics):
        try:
            dm = delta_m(metrics, single_means)
        except ValueError:
            dm = math.nan
        return (f"| *{name}* | - | - | {_plain_cell(metrics.get('miou'), 'miou')} "
                f"| {_plain_cell(metrics.get('instance_error'), 'instance_error')} "
                f"| {_plain_cell(metrics.get('depth_error'), 'depth_error')} | {_plain_cell(dm, 'delta_m')} |")

    lines.append(bound("Floor: no-image priors", report["floor"]))
    for r in rows:
        w = " / ".join(_fmt_weight(r["weights"].get(t)) for t in TASK_ORDER)
        lines.append(f"| {r['name']} | {w} | {r['lr']:g} | {_cell(r['miou'], 'miou') if 'semantic' in r['tasks'] else '-'} "
                     f"| {_cell(r['instance_error'], 'instance_error') if 'instance' in r['tasks'] else '-'} "
                     f"| {_cell(r['depth_error'], 'depth_error') if 'depth' in r['tasks'] else '-'} "
                     f"| {_cell(r['delta_m'], 'delta_m') if r['key'] not in P.SINGLE.values() else '0 (reference)'} |")
    lines.append(bound("Ceiling: ground truth at head resolution", report["ceiling"]))
    lines += ["", "Paired differences, same seed, mean ± 95% interval: each metric minus the single-task row's "
              "(positive mIoU and negative errors are better), and the 3-task rows' Δm minus that of 3-task "
              "uncertainty weighting (negative: uncertainty weighting is better):", "",
              "| Row | mIoU [pp] | Instance error [px] | Depth error [px] | Δm − 3-task uncertainty [pp] |",
              "| --- | --- | --- | --- | --- |"]
    for r in rows:
        if r["key"] in P.SINGLE.values():
            continue
        cells = [_paired(r[m].get("paired"), m) for m in METRICS] + [_paired(r["delta_m"].get("vs_uncertainty"),
                                                                             "delta_m")]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    lines += ["", _sweep_table(report), "", _rate_table(rows), "", _convergence_table(rows), "",
              settings_text(report)]
    return "\n".join(lines) + "\n"


def _fmt_weight(v) -> str:
    return "-" if v is None else (v if isinstance(v, str) else f"{v:g}")


def _paired(stat, metric) -> str:
    if stat is None or not math.isfinite(stat[0]):
        return "-"
    mean, half = stat
    s, d = SCALE[metric], DIGITS[metric]
    return f"{mean * s:+.{d}f}" + (f" ± {half * s:.{d}f}" if math.isfinite(half) else "")


def _sweep_table(report: dict) -> str:
    lrs = sorted({float(lr) for by_lr in report["sweep"].values() for lr in by_lr})
    single = {t: report["sweep"][k][str(report["rate"][k])] for t, k in P.SINGLE.items() if k in report["sweep"]}
    lines = ["Learning-rate sweep, seed 0, validation split: the selection score (single-task rows: their "
             "metric; the others: Δm [%] against the selected single-task rows); **bold**: chosen; rates "
             f"outside {', '.join(f'{v:g}' for v in report['settings']['lrs'])} were tried because the best "
             "rate was at an end of the sweep.", "",
             "| Row | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |", "| --- |" + " --- |" * len(lrs)]
    for row in P.ROWS:
        if row.key not in report["sweep"]:
            continue
        cells = []
        for lr in lrs:
            metrics = report["sweep"][row.key].get(str(lr))
            if metrics is None:
                cells.append("")
                continue
            value = P.score(row, metrics, single)
            metric = P.METRIC_OF_TASK[row.tasks[0]] if row.group == "single" else "delta_m"
            text = _plain_cell(abs(value) if row.group == "single" else value, metric)
            cells.append(f"**{text}**" if lr == report["rate"][row.key] else text)
        lines.append(f"| {row.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _rate_table(rows: list[dict]) -> str:
    lines = ["Per-task step size: the learning rate times the task's weight, averaged over the steps and "
             "seeds (the poly schedule is the same for every row), x 1000:", "",
             "| Row | semantic | instance | depth |", "| --- | --- | --- | --- |"]
    for r in rows:
        rate = r.get("task_rate") or {}
        lines.append(f"| {r['name']} | " + " | ".join(f"{1000 * rate[t]:.1f}" if t in rate else "-"
                                                     for t in TASK_ORDER) + " |")
    return "\n".join(lines)


def _convergence_table(rows: list[dict]) -> str:
    lines = ["Last 10% of training (seed means): change of the mean training loss against the 10% before; "
             "for uncertainty rows, the change of each s = log sigma^2 and its final value beside "
             "log(c L / r), where it would settle for the final losses.", "",
             "| Row | loss change (sem / inst / depth) | s change | s final | s at balance |",
             "| --- | --- | --- | --- | --- |"]
    for r in rows:
        c = r["convergence"]

        def triple(field, fmt):
            d = c.get(field) or {}
            return " / ".join(fmt(d[t]) if t in d and d[t] is not None and math.isfinite(d[t]) else "-"
                              for t in TASK_ORDER)

        pct = lambda v: f"{100 * v:+.1f}%"  # noqa: E731
        num = lambda v: f"{v:+.3f}"  # noqa: E731
        lines.append(f"| {r['name']} | {triple('loss_change', pct)} | {triple('s_change', num)} "
                     f"| {triple('s_final', num)} | {triple('s_balance', num)} |")
    return "\n".join(lines)


def settings_text(report: dict) -> str:
    s, m = report["settings"], report["machine"]
    workers = s["workers"]
    cpu = report.get("runs_cpu_seconds")
    text = (f"Settings: model {s['model']}" + (f" (width {s['width']})" if s.get("width") else "")
            + f", {s['size'][0]}x{s['size'][1]} images, {s['steps']} steps of batch {s['batch_size']}, "
            f"augment {s['augment']}, SGD with Nesterov momentum 0.9, weight decay 1e-4, poly decay 0.9; "
            f"learning rates {', '.join(f'{v:g}' for v in s['lrs'])} (up to {s.get('extend', 0)} more beyond an end "
            f"where a row's best rate was there); {s['seeds']} seed(s); data "
            + (f"synthetic city (seed {s['data_seed']}, splits {s['splits']})" if s["data"] == "synthetic"
               else s["data"])
            + f"; {workers or 1} process(es)"
            + (f" of {s.get('threads', 1)} thread(s)" if workers > 1 else "") + f" on {s['device']}. "
            f"Machine: {m['cpu']} ({m['cpus']} CPUs" + (f", {m['gpu']}" if m.get("gpu") else "")
            + f"), torch {m['torch']}. This invocation took {report['seconds'] / 60:.1f} min of wall time")
    reused = report.get("runs_reused", 0)
    text += f" and reused {reused} finished run(s)." if reused else "."
    if cpu is not None:
        text += (f" The {report['runs_count']} runs used {cpu / 60:.1f} min of CPU time in all"
                 + (f" (one thread each: about {cpu / 60 / workers:.0f} min on {workers} otherwise idle cores)."
                    if workers > 1 else "."))
    if report.get("quick"):
        text += " A --quick smoke run: the numbers mean nothing."
    return text


def write_report(report: dict, out: Path) -> None:
    from fastmtl.commands.table1.figures import plot_rows, plot_training

    out.mkdir(parents=True, exist_ok=True)
    rows = row_statistics(report)
    report["rows"] = rows
    (out / "table1.json").write_text(json.dumps(_finite(report), indent=1) + "\n")
    (out / "table1.md").write_text(markdown(report, rows))
    plot_rows(report, rows, out / "table1.png")
    plot_training(report, rows, out / "table1-training.png")


def _finite(obj):
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj
