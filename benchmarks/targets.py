"""The performance targets, each a ratio read off one loss-benchmark result.

``python -m benchmarks --suite targets`` runs the cases below; ``evaluate``
turns its rows into (target, goal, measured, met). A target's case is the
largest shape measured with its number of classes, so a run at other sizes
(``--sizes``, ``--small-batch``) still answers, naming the shape it used.
Standard library only: the device check's summary uses it without torch.

    python -m benchmarks.targets RESULT.json     # the table of any results JSON
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

# (size, classes, dtypes, implementations): the cases the targets are read from.
# The smallest one exposes per-call overhead (device time tiny, launch and Python visible).
TARGET_SUITE = (
    ("full", 19, ("fp32", "bf16"),
     ("reference", "compile", "liger", "triton", "triton-check-labels", "upsample-fused",
      "upsample-interp-triton", "upsample-interp-eager")),
    ("half", 150, ("fp32", "bf16"),
     ("reference", "compile", "liger", "triton", "upsample-fused", "upsample-interp-eager")),
    ("2x128x256", 19, ("fp32",),
     ("reference", "compile", "triton", "triton-check-labels", "upsample-fused")),
)
DTYPES = ("fp32", "bf16")
ELEMENT_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
HEAD_STRIDE = 8  # "1/8 heads": predictions at ceil(H/8) x ceil(W/8)


def _rows(result: dict) -> list[dict]:
    return [r for r in result.get("results", []) if r["mode"] == "fwd+bwd"]


def _pick(rows: list[dict], impl: str, classes: int, dtype: str) -> dict | None:
    """``impl``'s row at the largest shape measured with ``classes`` classes in ``dtype``."""
    same_c = [r for r in rows if r["classes"] == classes and r["dtype"] == dtype]
    if not same_c:
        return None
    largest = max(r["pixels"] for r in same_c)
    return next((r for r in same_c if r["pixels"] == largest and r["impl"] == impl), None)


def _ratio(row: dict | None, peer: str) -> float | None:
    return None if row is None else row.get("speedup", {}).get(peer)


def low_res_gradient_bytes(row: dict) -> int:
    """Bytes of the gradients of 1/8-resolution predictions (C + 3 channels) and the log-variances."""
    h, w = math.ceil(row["height"] / HEAD_STRIDE), math.ceil(row["width"] / HEAD_STRIDE)
    return row["batch"] * h * w * (row["classes"] + 3) * ELEMENT_BYTES[row["dtype"]] + 3 * 4


def _missing(result: dict, impls: tuple[str, ...]) -> str:
    reasons = {s["impl"]: s["reason"].split(" (")[0].split(";")[0] for s in result.get("skipped", [])}
    said = [f"{i}: {reasons[i]}" for i in impls if i in reasons]
    return "; ".join(said) if said else "not in this run"


def _label_check(t: dict | None, c: dict | None) -> float | None:
    # The paired timing of both calls (benchmarks.timing.paired_overhead) where the run has
    # it; results written before it existed: the ratio of the two medians.
    if not (t and c):
        return None
    if c.get("label_check_overhead") is not None:
        return c["label_check_overhead"]
    return c["median_s"] / t["median_s"] - 1


def host_bound(row: dict | None) -> str | None:
    """Where an eager row's median follows the host: its median host time per call
    (``host_s``) longer than the call's kernels (``graph_median_s``), so the GPU waited for
    the host between kernels. Says so, with both figures; None otherwise."""
    if not row or not row.get("host_s") or not row.get("graph_median_s"):
        return None
    host, kernels = row["host_s"], row["graph_median_s"]
    if host <= kernels:
        return None
    return (f"{row['impl']} host-bound: {1e3 * host:.2f} ms of host time per call, "
            f"{1e3 * kernels:.2f} ms of kernels")


def evaluate(result: dict) -> list[dict]:
    """One entry per target: name, goal, value, kind ('pct', 'x', 'ratio' or 'overhead'), met,
    case (the shape and dtype it was read at), when not measured why, and for a target read
    from eager medians, ``host_bound``: where the row whose slowness would leave it unmet
    (both rows of the label check) took longer on the host per call than its kernels."""
    rows, out = _rows(result), []

    def add(name, goal, kind, value, met, row, needs, eager=()):
        entry = {"target": name, "goal": goal, "kind": kind, "value": value,
                 "met": None if value is None else bool(met(value)),
                 "case": f"{row['shape']} {row['dtype']}" if row else None}
        if value is None:
            entry["why"] = _missing(result, needs)
        bound = [b for b in map(host_bound, eager) if b] if value is not None else []
        if bound:
            entry["host_bound"] = "; ".join(bound)
        out.append(entry)

    for dtype, pct in zip(DTYPES, (85, 80)):
        t = _pick(rows, "triton", 19, dtype)
        add(f"C=19 {dtype}: % of copy bandwidth", f">= {pct}%", "pct",
            t and t["pct_copy_bw"], lambda v, p=pct: v >= p, t, ("triton",), eager=(t,))
        add(f"C=19 {dtype}: % of copy bandwidth, graph replay", f">= {pct}%", "pct",
            t and t.get("graph_pct_copy_bw"), lambda v, p=pct: v >= p, t, ("triton",))
    fp32, bf16 = _pick(rows, "triton", 19, "fp32"), _pick(rows, "triton", 19, "bf16")
    add("C=19: bf16 faster than fp32", "> 1x", "x",
        fp32["median_s"] / bf16["median_s"] if fp32 and bf16 else None, lambda v: v > 1,
        bf16, ("triton",), eager=(bf16,))
    for dtype in DTYPES:
        t = _pick(rows, "triton", 19, dtype)
        add(f"C=19 {dtype}: x eager reference", ">= 4x", "x", _ratio(t, "reference"),
            lambda v: v >= 4, t, ("triton", "reference"))
        add(f"C=19 {dtype}: x torch.compile", ">= 2x", "x", _ratio(t, "compile"),
            lambda v: v >= 2, t, ("triton", "compile"))
    for dtype in DTYPES:
        t = _pick(rows, "triton", 150, dtype)
        add(f"C=150 {dtype}: % of copy bandwidth", ">= 80%", "pct", t and t["pct_copy_bw"],
            lambda v: v >= 80, t, ("triton",), eager=(t,))
        add(f"C=150 {dtype}: % of copy bandwidth, graph replay", ">= 80%", "pct",
            t and t.get("graph_pct_copy_bw"), lambda v: v >= 80, t, ("triton",))
        add(f"C=150 {dtype}: x torch.compile", ">= 1.5x", "x", _ratio(t, "compile"),
            lambda v: v >= 1.5, t, ("triton", "compile"))
    for dtype in DTYPES:
        t = _pick(rows, "triton", 19, dtype)
        add(f"C=19 {dtype}: peak / gradient bytes", "<= 1.05", "ratio",
            t and t["peak_over_gradients"], lambda v: v <= 1.05, t, ("triton",))
    for dtype in DTYPES:
        t, c = _pick(rows, "triton", 19, dtype), _pick(rows, "triton-check-labels", 19, dtype)
        add(f"C=19 {dtype}: label check overhead", "<= 3%", "overhead", _label_check(t, c),
            lambda v: v <= 0.03, c, ("triton", "triton-check-labels"), eager=(t, c))
    for classes in (19, 150):
        for dtype in DTYPES:
            u = _pick(rows, "upsample-fused", classes, dtype)
            name = f"1/8 heads C={classes} {dtype}"
            add(f"{name}: x full-resolution fused", ">= 3x", "x", _ratio(u, "triton"),
                lambda v: v >= 3, u, ("upsample-fused", "triton"), eager=(u,))
            add(f"{name}: x F.interpolate + eager", ">= 20x", "x",
                _ratio(u, "upsample-interp-eager"), lambda v: v >= 20, u,
                ("upsample-fused", "upsample-interp-eager"))
            peak = u and u.get("peak_bytes")
            add(f"{name}: peak / low-res gradient bytes", "near 1 (<= 1.05)", "ratio",
                peak / low_res_gradient_bytes(u) if peak else None, lambda v: v <= 1.05, u,
                ("upsample-fused",))
    return out


def format_value(entry: dict) -> str:
    v, kind = entry["value"], entry["kind"]
    if v is None:
        return "—"
    return {"pct": f"{v:.1f}%", "x": f"{v:.2f}x", "ratio": f"{v:.2f}",
            "overhead": f"{100 * v:+.1f}%"}[kind]


def table(entries: list[dict]) -> str:
    """Markdown table: target, goal, measured, met, case (or why it was not measured; and
    for an unmet target read from eager medians, the rows among them that were host-bound)."""
    lines = ["| target | goal | measured | met | case |", "| --- | --- | --- | --- | --- |"]
    for e in entries:
        met = {True: "yes", False: "no", None: "—"}[e["met"]]
        case = e["case"] if e["value"] is not None else f"not measured ({e['why']})"
        if e.get("host_bound") and e["met"] is False:
            case += f" ({e['host_bound']})"
        lines.append(f"| {e['target']} | {e['goal']} | {format_value(e)} | {met} | {case} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.targets", description=__doc__.splitlines()[0])
    p.add_argument("json", type=Path, help="a results JSON written by python -m benchmarks")
    args = p.parse_args(argv)
    print(table(evaluate(json.loads(args.json.read_text()))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
