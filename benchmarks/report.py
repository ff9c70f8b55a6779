"""Speed-ups and the markdown table written beside the JSON (and printed)."""
from __future__ import annotations

COLUMNS = """\
- median ms, IQR ms, min ms: time of one call (CUDA events on GPU, perf_counter on CPU);
  IQR is the 25th-75th percentile range over the repetitions.
- GB/s: minimal bytes of the cost model (each input read once, each gradient written once;
  `bytes/px` per pixel) divided by the median time.
- % copy: that as a percentage of this device's `dst.copy_(src)` bandwidth, measured in this run.
- peak MiB: peak memory allocated during one call beyond the inputs, gradients included (CUDA only).
- peak/grads: that over the bytes of the gradient buffers (fwd+bwd only).
- vs X: X's median over this row's median; above 1 this row is faster than X.
"""


def case_key(row: dict) -> tuple:
    return (row["shape"], row["classes"], row["dtype"], row["target_dtype"], row["mode"])


def add_speedups(rows: list[dict]) -> None:
    """row["speedup"][peer] = peer median / row median, for every peer timed on the same case."""
    by_case: dict[tuple, dict[str, float]] = {}
    for r in rows:
        by_case.setdefault(case_key(r), {})[r["impl"]] = r["median_s"]
    for r in rows:
        peers = by_case[case_key(r)]
        r["speedup"] = {p: t / r["median_s"] for p, t in peers.items() if p != r["impl"]}


def _num(v, digits=3) -> str:
    if v is None:
        return "—"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.{digits}f}"


def _table(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *map(line, body)])


def results_table(rows: list[dict]) -> str:
    peers = list(dict.fromkeys(r["impl"] for r in rows))
    header = ["impl", "size", "BxHxW", "C", "dtype", "mode", "median ms", "IQR ms", "min ms",
              "bytes/px", "GB/s", "% copy", "peak MiB", "peak/grads", *[f"vs {p}" for p in peers]]
    body = []
    for r in rows:
        ms = lambda k: r[k] * 1e3  # noqa: E731
        peak = None if r["peak_bytes"] is None else r["peak_bytes"] / 2**20
        body.append([
            r["impl"], r["size"], r["shape"], str(r["classes"]), r["dtype"], r["mode"],
            _num(ms("median_s")), f"{_num(ms('p25_s'))}–{_num(ms('p75_s'))}", _num(ms("min_s")),
            str(r["bytes_per_pixel"]), _num(r["gbps"], 1), _num(r["pct_copy_bw"], 1), _num(peak, 1),
            _num(r["peak_over_gradients"], 2),
            *["—" if p == r["impl"] else (f"{r['speedup'][p]:.2f}x" if p in r["speedup"] else "")
              for p in peers],
        ])
    return _table(header, body)


def markdown(result: dict) -> str:
    dev, v, copy = result["device"], result["versions"], result["copy_bandwidth"]
    s = result["settings"]
    out = [f"# fastmtl loss benchmarks: {dev['name']} ({dev['type']}), {result['date']}", "",
           "```", result["command"], "```", "",
           "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val is not None) + ".", "",
           f"Copy bandwidth: {copy['gbps']:.1f} GB/s (`dst.copy_(src)` of {copy['bytes'] / 2**20:.0f} MiB, "
           f"bytes counted twice, median of {copy['repeats']}).", "",
           f"Labels {s['target_dtype']}; median of {s['repeats']} repetitions after {s['warmup']} "
           f"warm-up calls; label check {'on' if s['check_labels'] else 'off'}.", ""]
    out += [results_table(result["results"]) if result["results"] else "No case ran.", "", COLUMNS]
    if result["skipped"]:
        out.append("Skipped:")
        for sk in result["skipped"]:
            where = f" ({sk['case']})" if sk["case"] else ""
            out.append(f"- {sk['impl']}{where}: {sk['reason']}")
        out.append("")
    return "\n".join(out)
