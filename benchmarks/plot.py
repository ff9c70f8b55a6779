"""Bar charts of a results JSON: one row of panels per case, one bar per implementation.

Loss results: median time, % of copy bandwidth (with the 100% line) and peak
memory above the inputs. Training-step results: step time, peak memory and
the largest batch that fits, one bar per loss variant.

    python -m benchmarks.plot RESULT.json [MORE.json ...] [-o out.png] [--mode fwd]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

FASTMTL = ("triton", "triton-check-labels", "upsample-fused", "fastmtl", "fastmtl-low")


def _bars(ax, names, values, fmt, title, colors, clip=False, labels=None):
    """Horizontal bars, first name on top, each labelled with its value (or ``labels[i]`` where
    given); None is drawn as 'n/a'.

    ``clip``: the axis ends at 4x the median value, so one slow peer does not flatten the
    others; bars past it are cut at the edge, labelled with their value and '(off scale)'."""
    import statistics

    y = list(range(len(names)))
    drawn = [v if v is not None else 0 for v in values]
    known = [v for v in values if v is not None]
    top = max(known, default=0) or 1
    limit = top * 1.3
    if clip and known and top > 4 * statistics.median(known):
        limit = 4 * statistics.median(known) * 1.3
    ax.barh(y, [min(v, limit) for v in drawn], color=colors)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_title(title, fontsize="medium")
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_xlim(0, limit)
    for i, v in enumerate(values):
        if v is None:
            ax.text(0, i, " n/a", va="center", fontsize="small")
        elif v > limit:
            ax.text(limit, i, fmt(v) + " (off scale) ", va="center", ha="right", fontsize="small",
                    color="white")
        else:
            ax.text(v, i, " " + ((labels or [None] * len(values))[i] or fmt(v)), va="center",
                    fontsize="small")


def _colors(names):
    return ["tab:red" if n in FASTMTL else "tab:gray" for n in names]


def _figure(cases, ncols, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    height = max(2.2, 0.32 * max(len(rows) for _, rows in cases) + 1.2)
    fig, axes = plt.subplots(len(cases), ncols, figsize=(5.5 * ncols, height * len(cases)),
                             squeeze=False, layout="constrained")
    fig.suptitle(title)
    return plt, fig, axes


def _by_case(rows, key):
    cases: dict[tuple, list] = {}
    for r in rows:
        cases.setdefault(key(r), []).append(r)
    return list(cases.items())


def _ms(v):
    return f"{v:.3g} ms"


def plot_loss(result: dict, mode: str):
    rows = [r for r in result["results"] if r["mode"] == mode]
    cases = _by_case(rows, lambda r: (r["shape"], r["classes"], r["dtype"]))
    if not cases:
        return None
    dev = result["device"]
    plt, fig, axes = _figure(cases, 3, f"fastmtl loss, {mode}: {dev['name']} ({dev['type']}), "
                             f"{result['date']}; red: fastmtl")
    for (shape, classes, dtype), case_rows in cases:
        i = [c for c, _ in cases].index((shape, classes, dtype))
        names = [r["impl"] for r in case_rows]
        colors = _colors(names)
        label = f"{shape}, C={classes}, {dtype}"
        times = [r["median_s"] * 1e3 for r in case_rows]
        _bars(axes[i][0], names, times, _ms, f"{label}: median time", colors, clip=True)
        wall = [(r["wall_s"] * 1e3, y) for y, r in enumerate(case_rows) if r.get("wall_s") is not None]
        if wall:  # per-call wall clock of back-to-back calls: above the bar when launch costs show
            limit = axes[i][0].get_xlim()[1]
            axes[i][0].plot([min(w, limit) for w, _ in wall], [y for _, y in wall], "kD", markersize=4,
                            label="wall clock per call, back to back")
            axes[i][0].legend(fontsize="x-small", loc="lower right")
        pct = [r["pct_copy_bw"] for r in case_rows]
        _bars(axes[i][1], names, pct, lambda v: f"{v:.1f}%", "% of copy bandwidth", colors)
        axes[i][1].axvline(100, color="black", linestyle="--", linewidth=1)
        axes[i][1].text(100, 0.99, "dst.copy_(src) = 100% ", fontsize="small", va="top", ha="right",
                        transform=axes[i][1].get_xaxis_transform())
        axes[i][1].set_xlim(0, max(115, max(pct) * 1.3))
        peak = [None if r["peak_bytes"] is None else r["peak_bytes"] / 2**20 for r in case_rows]
        if any(p is not None for p in peak):
            _bars(axes[i][2], names, peak, lambda v: f"{v:.0f} MiB",
                  "peak memory above the inputs", colors)
        else:
            axes[i][2].set_axis_off()
            axes[i][2].text(0.5, 0.5, "peak memory is measured on CUDA only", ha="center",
                            va="center", transform=axes[i][2].transAxes)
    return plt, fig


def plot_train_step(result: dict):
    cases = _by_case(result["results"], lambda r: (r["model"], r["size"], r["batch"]))
    if not cases:
        return None
    dev = result["device"]
    plt, fig, axes = _figure(cases, 3, f"fastmtl training step: {dev['name']} ({dev['type']}), "
                             f"{result['date']}; red: fastmtl")
    for i, ((model, size, batch), rows) in enumerate(cases):
        names = [r["variant"] for r in rows]
        colors = _colors(names)
        label = f"{model} {batch}x{size}"
        ms = [None if r.get("median_s") is None else r["median_s"] * 1e3 for r in rows]
        _bars(axes[i][0], names, ms, _ms, f"{label}: step time", colors)
        peak = [None if r.get("peak_bytes") is None else r["peak_bytes"] / 1e9 for r in rows]
        _bars(axes[i][1], names, peak, lambda v: f"{v:.2f} GB", "peak memory", colors)
        largest = [r.get("largest_batch") for r in rows]
        bound = {r["variant"] for r in rows if r.get("largest_batch_note") in ("time limit", "cap")}
        _bars(axes[i][2], names, largest, lambda v: f"{v}", "largest batch that fits", colors,
              labels=[f">= {v}" if n in bound else None for n, v in zip(names, largest)])
        axes[i][2].xaxis.get_major_locator().set_params(integer=True)
    return plt, fig


def plot(path: Path, out: Path | None = None, mode: str = "fwd+bwd") -> Path | None:
    """Write the PNG of one results JSON (default: beside it); None when it has no rows to draw."""
    result = json.loads(Path(path).read_text())
    drawn = plot_train_step(result) if result.get("kind") == "train-step" else plot_loss(result, mode)
    if drawn is None:
        return None
    plt, fig = drawn
    out = Path(out) if out else Path(path).with_suffix(".png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.plot", description=__doc__.splitlines()[0])
    p.add_argument("json", type=Path, nargs="+", help="results JSON written by python -m benchmarks")
    p.add_argument("-o", "--out", type=Path, help="PNG path (one JSON only; default: the JSON's, .png)")
    p.add_argument("--mode", default="fwd+bwd", choices=["fwd+bwd", "fwd"])
    args = p.parse_args(argv)
    if args.out and len(args.json) > 1:
        p.error("-o names one PNG: give one JSON with it")
    status = 0
    for path in args.json:
        try:
            png = plot(path, args.out, args.mode)
        except Exception as exc:  # one bad file must not stop the others
            print(f"{path}: {type(exc).__name__}: {exc}")
            status = 1
            continue
        print(png if png else f"{path}: nothing to plot")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
