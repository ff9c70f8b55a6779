"""Time and peak memory against pixel count, per implementation, from a results JSON.

    python -m benchmarks.plot benchmarks/results/<device>-<date>.json [-o out.png] [--mode fwd]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def plot(path: Path, out: Path | None = None, mode: str = "fwd+bwd") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = json.loads(Path(path).read_text())
    rows = [r for r in result["results"] if r["mode"] == mode]
    panels = sorted({(r["classes"], r["dtype"]) for r in rows}) or [(None, None)]
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    fig, axes = plt.subplots(2, len(panels), figsize=(4.5 * len(panels), 7), squeeze=False)
    for col, (classes, dtype) in enumerate(panels):
        time_ax, mem_ax = axes[0][col], axes[1][col]
        for impl in impls:
            pts = sorted((r["pixels"], r["median_s"] * 1e3, r["peak_bytes"]) for r in rows
                         if r["impl"] == impl and (r["classes"], r["dtype"]) == (classes, dtype))
            if not pts:
                continue
            px = [p[0] for p in pts]
            time_ax.plot(px, [p[1] for p in pts], "o-", label=impl)
            mem = [(x, p[2] / 2**20) for x, p in zip(px, pts) if p[2] is not None]
            if mem:
                mem_ax.plot(*zip(*mem), "o-", label=impl)
        time_ax.set_title(f"C={classes}, {dtype}, {mode}")
        time_ax.set_ylabel("median time (ms)")
        mem_ax.set_ylabel("peak memory above inputs (MiB)")
        for ax in (time_ax, mem_ax):
            ax.set_xlabel("pixels (B x H x W)")
            ax.set_xscale("log")
            if ax.lines:
                ax.set_yscale("log")
                ax.legend(fontsize="small")
            ax.grid(True, which="both", alpha=0.3)
        if not mem_ax.lines:
            mem_ax.set_axis_off()
            mem_ax.text(0.5, 0.5, "peak memory is measured on CUDA only", ha="center",
                        va="center", transform=mem_ax.transAxes)
    dev = result["device"]
    fig.suptitle(f"fastmtl loss benchmarks: {dev['name']} ({dev['type']}), {result['date']}")
    fig.tight_layout()
    out = Path(out) if out else Path(path).with_suffix(".png")
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.plot", description=__doc__.splitlines()[0])
    p.add_argument("json", type=Path, help="a results JSON written by python -m benchmarks")
    p.add_argument("-o", "--out", type=Path, help="PNG path (default: the JSON's, .png)")
    p.add_argument("--mode", default="fwd+bwd", choices=["fwd+bwd", "fwd"])
    args = p.parse_args(argv)
    print(plot(args.json, args.out, args.mode))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
