"""Derived columns and the markdown of a training-step result. Standard library only."""
from __future__ import annotations

from benchmarks.report import num, table

COLUMNS = """\
- step ms, IQR ms: one training step (zero_grad, forward under autocast, loss, backward, SGD step),
  median and 25th-75th percentile over the repetitions (CUDA: triton.testing.do_bench).
- peak GB: torch.cuda.max_memory_allocated during one step (weights, optimizer state, inputs,
  activations, gradients), 1 GB = 1e9 bytes.
- largest batch: the largest batch whose step ran without running out of memory; "exact" when one
  more did not fit, "cap" when the largest tried fitted, "time limit" when the search was cut
  short (then a lower bound).
- x eager: eager's step time over this row's. loss share: (this row - no-loss) / this row, for
  time and for peak memory; no-loss is the same step with 1/8 heads and a trivial objective, so
  the share includes the network's upsampling where the variant has it.
"""


def _group(row: dict) -> tuple:
    return (row["model"], row["size"], row["batch"])


def add_derived(rows: list[dict]) -> None:
    """x eager (time), peak over eager's, and the loss's share of step time and peak memory."""
    by_group: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        by_group.setdefault(_group(r), {})[r["variant"]] = r
    for r in rows:
        peers = by_group[_group(r)]
        eager, base = peers.get("eager"), peers.get("no-loss")
        ok = lambda other, key: (other is not None and other.get(key) and r.get(key))  # noqa: E731
        r["x_eager"] = eager["median_s"] / r["median_s"] if ok(eager, "median_s") else None
        r["peak_over_eager"] = r["peak_bytes"] / eager["peak_bytes"] if ok(eager, "peak_bytes") else None
        loss = r["variant"] != "no-loss"
        r["loss_share_time"] = (1 - base["median_s"] / r["median_s"]) if loss and ok(base, "median_s") \
            else None
        r["loss_share_peak"] = (1 - base["peak_bytes"] / r["peak_bytes"]) if loss and ok(base, "peak_bytes") \
            else None


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def results_table(rows: list[dict]) -> str:
    header = ["model", "HxW", "batch", "variant", "step ms", "IQR ms", "peak GB", "largest batch",
              "x eager", "loss share time", "loss share peak"]
    body = []
    for r in rows:
        if r.get("error") and r.get("median_s") is None:
            body.append([r["model"], r["size"], str(r["batch"]), r["variant"], r["error"],
                         *[""] * 2, _largest(r), *[""] * 3])
            continue
        ms = lambda k: num(r[k] * 1e3) if r.get(k) is not None else "—"  # noqa: E731
        peak = r.get("peak_bytes")
        body.append([r["model"], r["size"], str(r["batch"]), r["variant"], ms("median_s"),
                     f"{ms('p25_s')}–{ms('p75_s')}", "—" if peak is None else f"{peak / 1e9:.2f}",
                     _largest(r), "—" if r.get("x_eager") is None else f"{r['x_eager']:.2f}x",
                     _pct(r.get("loss_share_time")), _pct(r.get("loss_share_peak"))])
    return table(header, body)


def _largest(row: dict) -> str:
    if row.get("largest_batch") is None:
        return f"— ({row['largest_batch_note']})" if row.get("largest_batch_note") else "—"
    note = row.get("largest_batch_note")
    return f"{row['largest_batch']}" + ("" if note == "exact" else f" ({note})")


def markdown(result: dict) -> str:
    dev, v, s = result["device"], result["versions"], result["settings"]
    out = [f"# fastmtl training-step benchmark: {dev['name']} ({dev['type']}), {result['date']}", "",
           "```", result["command"], "```", "",
           "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val is not None) + ".", "",
           f"{s['amp']} autocast, {s['optimizer']}, C={s['classes']}, label check "
           f"{'on' if s['check_labels'] else 'off'}; median of {s['repeats']} steps after "
           f"{s['warmup']} warm-up steps; timer {s['timer']}.", "",
           results_table(result["results"]) if result["results"] else "No case ran.", "",
           "Variants: " + "; ".join(f"`{k}` {d}" for k, d in result["variants"].items()) + ".", "",
           COLUMNS]
    errors = [r for r in result["results"] if r.get("error")]
    if errors:
        out.append("Errors:")
        out += [f"- {r['model']} {r['size']} {r['variant']}: {r['error']}" for r in errors]
        out.append("")
    return "\n".join(out)
