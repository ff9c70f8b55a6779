"""``python -m benchmarks.phase_model``: two programs sharing an SM, in step or out of step.

A fluid model (a cost model, not a measurement) of the one-read layouts at C = 150, two
programs per SM, each looping: load its tile (all of it before any arithmetic), compute,
then store it while loading the next. The SM's share of DRAM bandwidth is split evenly
between the transfers in flight (loads and stores of both programs); the arithmetic
(bound by the MUFU pipe, docs/kernel.md) is split evenly between the programs computing.
Events are exact: between two of them every rate is constant.

Started together, the two programs stay in step: both compute while the memory idles.
A program that starts ``offset`` microseconds late computes while the other's transfers
run. ``jitter`` varies each tile's arithmetic by up to that fraction (seeded), to see
whether an offset lasts. With the odd warps of every program late instead (the tile loop
has no barrier, so warps run apart), the two "programs" are the SM's early and late warps:
the same bytes, each scheduler's two warps computing in step (twice one program's
arithmetic), and no pipe shared between the halves (``shared_pipe=False``). docs/kernel.md, "Two programs per SM out of step", uses the table
this prints.
"""
from __future__ import annotations

import argparse
import random
from dataclasses import dataclass

# Per program and tile of the C = 150 one-read layouts, 8 x 512 x 1024 (docs/kernel.md):
# 256 pixels x 150 planes x 2 bytes (bf16 pairs) or 128 x 150 x 4 (fp32), read and written;
# arithmetic of one program alone on the SM, in microseconds at 1.98 GHz: the MUFU pipe's
# 602 (bf16) or 311 (fp32) exponentials per warp at 8 cycles each.
TILE_KB = 76.8
COMPUTE_US = {"bf16 pairs": 602 * 8 / 1980, "fp32 one pixel": 311 * 8 / 1980}
COPY_GBPS = {"H200": 4259.0, "H100": 3016.0}  # measured copy bandwidth (benchmarks/results)
SMS = 132


@dataclass
class _Program:
    phase: str      # "wait", "load", "compute" or "end"
    left: float     # microseconds (wait), KB (load) or microseconds alone (compute)
    stores: float = 0.0  # KB of stores still draining
    tiles: int = 0


def round_us(load_kb: float, store_kb: float, compute_us: float, kb_per_us: float,
             offset_us: float, tiles: int = 64, jitter: float = 0.0, seed: int = 0,
             shared_pipe: bool = True) -> float:
    """Average time per round (each program one tile) over ``tiles`` tiles. ``shared_pipe``:
    the programs computing at once share the arithmetic pipe (each at its share)."""
    rng = random.Random(seed)
    work = lambda: compute_us * (1 + rng.uniform(-jitter, jitter))  # noqa: E731
    progs = [_Program("load", load_kb), _Program("wait" if offset_us > 0 else "load",
                                                  offset_us if offset_us > 0 else load_kb)]
    now = 0.0
    while any(p.phase != "end" for p in progs):
        flows = sum(p.phase == "load" for p in progs) + sum(p.stores > 0 for p in progs)
        share = kb_per_us / flows if flows else 0.0
        computing = sum(p.phase == "compute" for p in progs) if shared_pipe else 1
        # time to the next event at today's rates
        step = min([p.left for p in progs if p.phase == "wait"]
                   + [p.left / share for p in progs if p.phase == "load"]
                   + [p.stores / share for p in progs if p.stores > 0]
                   + [p.left * computing for p in progs if p.phase == "compute"])
        now += step
        for p in progs:
            if p.stores > 0:
                p.stores = max(0.0, p.stores - share * step)
            if p.phase == "wait":
                p.left -= step
                if p.left <= 1e-12:
                    p.phase, p.left = "load", load_kb
            elif p.phase == "load":
                p.left -= share * step
                if p.left <= 1e-9:
                    p.phase, p.left = "compute", work()
            elif p.phase == "compute":
                p.left -= step / computing
                if p.left <= 1e-12:
                    p.stores += store_kb
                    p.tiles += 1
                    p.phase, p.left = ("load", load_kb) if p.tiles < tiles else ("end", 0.0)
            if p.stores < 1e-9:
                p.stores = 0.0
    return (now + sum(p.stores for p in progs) / kb_per_us) / tiles


def in_step_us(load_kb: float, store_kb: float, compute_us: float, kb_per_us: float) -> float:
    """The closed form in step: both programs' bytes, then both programs' arithmetic."""
    return 2 * (load_kb + store_kb) / kb_per_us + 2 * compute_us


def table(offsets=(0, 1, 2, 3, 4, 5, 6), seeds=3, jitter=0.2) -> str:
    lines = ["| layout | late | card | offset us | round us, exact | with jitter (3 seeds) | "
             "memory bound us | % of copy, exact |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for layout, compute in COMPUTE_US.items():
        for late, work, shared in (("one program", compute, True), ("odd warps", 2 * compute,
                                                                     False)):
            for card, gbps in COPY_GBPS.items():
                lines += _rows(layout, late, card, gbps / SMS, work, shared, offsets, seeds,
                               jitter)
    return "\n".join(lines)


def _rows(layout, late, card, rate, work, shared, offsets, seeds, jitter) -> list[str]:
    bound = 2 * 2 * TILE_KB / rate  # rate: KB per microsecond and SM
    rows = []
    for off in offsets:
        exact = round_us(TILE_KB, TILE_KB, work, rate, off, shared_pipe=shared)
        noisy = [round_us(TILE_KB, TILE_KB, work, rate, off, jitter=jitter, seed=s,
                          shared_pipe=shared) for s in range(seeds)]
        rows.append(f"| {layout} | {late} | {card} | {off} | {exact:.2f} | "
                    + " / ".join(f"{v:.2f}" for v in noisy)
                    + f" | {bound:.2f} | {100 * bound / exact:.0f}% |")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.phase_model",
                                description=__doc__.splitlines()[0])
    p.add_argument("--jitter", type=float, default=0.2,
                   help="each tile's arithmetic varies by up to this fraction (default 0.2)")
    args = p.parse_args(argv)
    print(table(jitter=args.jitter))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
