"""Speed-ups and the markdown written beside a loss-benchmark JSON (and printed).

Standard library only, so results can be reported where torch is not importable.
"""
from __future__ import annotations

from benchmarks import targets

COLUMNS = """\
- median ms, IQR ms: device time of one call (CUDA: triton.testing.do_bench, CUDA events with L2
  evicted before each call; CPU: perf_counter), median and 25th-75th percentile over the repetitions.
- wall ms, host ms: per-call overhead. wall: calls back to back, one synchronisation at the end,
  wall clock per call (the larger of device and host time); host: time to issue one call.
- graph ms: device time of the same call captured once in a CUDA graph and replayed (same timer):
  its kernels with no host work between them. Where median ms is larger, the GPU waited for the
  host to issue the call's launches (CUDA only; blank where the call cannot be captured).
- GB/s: minimal bytes of the cost model (each input read once, each gradient written once;
  `bytes/px` per pixel) divided by the median time.
- % copy: that as a percentage of this device's `dst.copy_(src)` bandwidth, measured in this run;
  % copy (graph): the same from graph ms.
- peak MiB: peak memory allocated during one call beyond the inputs, gradients included (CUDA only).
- peak/grads: that over the bytes of the gradients the call returns (fwd+bwd only).
- vs X: X's median over this row's median; above 1 this row is faster than X.
- us/call (kernels): a kernel's device time per call under torch.profiler (no L2 eviction between
  calls, so a sum can fall short of the median); % of median: that over the row's median.
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


def num(v, digits=3) -> str:
    if v is None:
        return "—"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.{digits}f}"


def table(header: list[str], body: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *map(line, body)])


def _ms(row: dict, key: str) -> str:
    return num(None if row.get(key) is None else row[key] * 1e3)


def results_table(rows: list[dict]) -> str:
    header = ["impl", "size", "BxHxW", "C", "dtype", "mode", "median ms", "IQR ms", "wall ms",
              "host ms", "graph ms", "bytes/px", "GB/s", "% copy", "% copy (graph)", "peak MiB",
              "peak/grads"]
    body = []
    for r in rows:
        peak = None if r["peak_bytes"] is None else r["peak_bytes"] / 2**20
        body.append([
            r["impl"], r["size"], r["shape"], str(r["classes"]), r["dtype"], r["mode"],
            _ms(r, "median_s"), f"{_ms(r, 'p25_s')}–{_ms(r, 'p75_s')}", _ms(r, "wall_s"),
            _ms(r, "host_s"), _ms(r, "graph_median_s"), str(r["bytes_per_pixel"]), num(r["gbps"], 1),
            num(r["pct_copy_bw"], 1), num(r.get("graph_pct_copy_bw"), 1),
            num(peak, 1), num(r["peak_over_gradients"], 2),
        ])
    return table(header, body)


def speedup_table(rows: list[dict]) -> str:
    peers = list(dict.fromkeys(r["impl"] for r in rows))
    header = ["impl", "BxHxW", "C", "dtype", "mode", *[f"vs {p}" for p in peers]]
    body = [[r["impl"], r["shape"], str(r["classes"]), r["dtype"], r["mode"],
             *["—" if p == r["impl"] else (f"{r['speedup'][p]:.2f}x" if p in r["speedup"] else "")
               for p in peers]] for r in rows]
    return table(header, body)


def overhead_rows(rows: list[dict]) -> list[dict]:
    """The rows of the smallest shape measured, when wall and host times were recorded."""
    timed = [r for r in rows if r.get("wall_s") is not None]
    if not timed:
        return []
    smallest = min(r["pixels"] for r in timed)
    return [r for r in timed if r["pixels"] == smallest]


def overhead_table(rows: list[dict]) -> str:
    header = ["impl", "BxHxW", "C", "dtype", "mode", "device ms", "wall ms", "host ms"]
    return table(header, [[r["impl"], r["shape"], str(r["classes"]), r["dtype"], r["mode"],
                           _ms(r, "median_s"), _ms(r, "wall_s"), _ms(r, "host_s")] for r in rows])


OUR_IMPLS = ("triton", "upsample-fused")


def kernels_table(rows: list[dict], impls=OUR_IMPLS) -> str | None:
    """Each kernel of ``impls``' fwd+bwd rows, device microseconds per call and share of the median."""
    body = []
    for r in rows:
        k = r.get("kernels") or {}
        if r["impl"] not in impls or r["mode"] != "fwd+bwd" or "us_per_call" not in k:
            continue
        case = [r["impl"], r["shape"], str(r["classes"]), r["dtype"]]
        for name, us in k["us_per_call"].items():
            body.append([*case, name, num(us, 1), num(100 * us / (r["median_s"] * 1e6), 1)])
        body.append([*case, f"({k['launches_per_call']:.0f} launches per call)", "", ""])
    if not body:
        return None
    return table(["impl", "BxHxW", "C", "dtype", "kernel", "us/call", "% of median"], body)


def _whole(v) -> str:
    return "—" if v is None else f"{v:.0f}"


def clocks_table(rows: list[dict]) -> str | None:
    """The GPU's SM clock and power while each row's device time was measured (nvidia-smi)."""
    body = [[r["impl"], r["shape"], str(r["classes"]), r["dtype"], r["mode"],
             f"{c['sm_mhz']:.0f}", f"{c['sm_mhz_min']:.0f}", _whole(c["power_w"]),
             _whole(c["temp_c"]), ", ".join(c["reasons"]) or "-", str(c["samples"])]
            for r in rows if (c := r.get("clocks"))]
    if not body:
        return None
    return table(["impl", "BxHxW", "C", "dtype", "mode", "SM MHz", "lowest", "W", "max C",
                  "clock events", "samples"], body)


def markdown(result: dict) -> str:
    dev, v, copy = result["device"], result["versions"], result["copy_bandwidth"]
    s, rows = result["settings"], result["results"]
    out = [f"# fastmtl loss benchmarks: {dev['name']} ({dev['type']}), {result['date']}", "",
           "```", result["command"], "```", "",
           "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val is not None) + ".", "",
           f"Copy bandwidth: {copy['gbps']:.1f} GB/s (`dst.copy_(src)` of {copy['bytes'] / 2**20:.0f} MiB, "
           f"bytes counted twice, median of {copy['repeats']}).", "",
           f"Labels {s['target_dtype']}; timer {s.get('timer', 'CUDA events / perf_counter')}, about "
           f"{s['repeats']} repetitions after {s['warmup']} warm-up calls; label check "
           f"{'on' if s['check_labels'] else 'off'} (except `triton-check-labels`).", ""]
    if result.get("partial"):
        out += [f"Partial: {result['partial']}", ""]
    if not rows:
        out += ["No case ran.", ""]
    else:
        out += ["## Targets", "", targets.table(targets.evaluate(result)), "",
                "## Results", "", results_table(rows), "", "## Speed-ups", "", speedup_table(rows), ""]
        small = overhead_rows(rows)
        if small:
            out += ["## Per-call overhead (smallest shape)", "", overhead_table(small), ""]
        kernels = kernels_table(rows)
        if kernels:
            out += ["## Kernels of fastmtl's calls (torch.profiler, CUDA)", "", kernels, ""]
        clocks = clocks_table(rows)
        if clocks:
            copy_clocks = copy.get("clocks")
            during_copy = (f" During the copy-bandwidth measurement: {copy_clocks['sm_mhz']:.0f}"
                           f" MHz." if copy_clocks else "")
            out += ["## GPU clocks while each row was timed (nvidia-smi)", "",
                    "Median SM clock, its lowest sample, median power draw, highest "
                    "temperature and the clock-event reasons reported while the row's device "
                    "time was measured: a row timed at a lower clock than the others is slower "
                    f"for that reason too.{during_copy}", "", clocks, ""]
        out += [COLUMNS]
    if result["skipped"]:
        out.append("Skipped:")
        for sk in result["skipped"]:
            where = f" ({sk['case']})" if sk["case"] else ""
            out.append(f"- {sk['impl']}{where}: {sk['reason']}")
        out.append("")
    return "\n".join(out)
