"""``python -m benchmarks.tune --out DIR``: launch configurations of the fused pass, timed alone.

For each case (C = 150 at 8 x 512 x 1024 and, for reference, C = 19 at 8 x 1024 x 2048,
fp32 and bf16, all three tasks, int64 labels, synthetic inputs of
``benchmarks.problem.make_inputs``) the op's forward runs once with the library's
default configuration, which leaves the normalisers' state and the reference
gradients. Then, per candidate configuration (attributes of a
``fastmtl.ops.fused_layout.Problem``: pixels per thread ``vector``, ``warps``, pipelining
``stages``, the program cap ``max_programs`` and, for the sweeps, the class
``chunk``), ``fused_loss_kernel`` alone (WRITE_GRAD, no backward) is

- checked: its gradients and per-task partial sums against the default's (the
  gradient buffers are filled with NaN first, so a tile left unwritten shows);
- timed: ``triton.testing.do_bench`` (L2 flushed before each repetition), median;
- reported as % of this device's copy bandwidth on the fused pass's bytes (the
  cost model's minimal bytes, fwd + bwd: each input read once, each gradient
  written once; the sweeps' re-read of the logits is not counted).

Candidates are ordered most promising first; once ``--budget`` seconds are spent
the remaining ones are skipped (and listed as skipped). ``tune.json`` and
``tune.md`` (sorted table per case, best marked) are rewritten after every case.
The registers, spills and shared memory of each compiled configuration come from
the driver, programs per SM from the occupancy formula of docs/kernel.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch

SM_COUNT_H100 = 132  # the caps below are fixed numbers: the library's grid depends on shapes only
PERSISTENT = (SM_COUNT_H100, SM_COUNT_H100 * 2, SM_COUNT_H100 * 4, SM_COUNT_H100 * 8)
DEFAULT_PROGRAMS = 16384
ONE_TILE_PROGRAMS = 32768  # C = 150 at the benchmark size, 128-pixel tiles: one tile per
                           # program (fused_layout.ONE_TILE)


@dataclass(frozen=True)
class Config:
    """One launch configuration of the fused pass. ``chunk`` None: the library's class layout
    for this vector (the C = 19 planes in registers); RESIDENT: every class plane of the tile
    in registers at any C, moved through inline PTX (one read of the logits); PAIRS: the same
    for 16-bit logits as 32-bit words of two pixels (vector 2); otherwise two sweeps over
    chunks."""

    vector: int
    warps: int
    stages: int
    max_programs: int
    chunk: Optional[int] = None
    sum_chunk: Optional[int] = None  # one-read layouts: planes per step of the running sum
    kept: Optional[bool] = None  # one-read layouts: the sum's exponentials kept for the
    # gradient (None: the library's choice, fused_layout.KEPT_EXPS and KEPT_PAIRS)

    @property
    def block_p(self) -> int:
        return self.vector * 32 * self.warps

    @property
    def name(self) -> str:
        chunk = ("planes" if self.chunk is None else "resident" if self.chunk == RESIDENT
                 else "pairs" if self.chunk == PAIRS else "split" if self.chunk == SPLIT
                 else f"c{self.chunk}")
        sums = "" if self.sum_chunk is None else f" sum{self.sum_chunk}"
        kept = {None: "", True: " kept", False: " exps-again"}[self.kept]
        return (f"V{self.vector} w{self.warps} s{self.stages} {chunk} p{self.max_programs}"
                f"{sums}{kept}")


@dataclass(frozen=True)
class Case:
    tag: str
    classes: int
    dtype: str  # key of benchmarks.problem.DTYPES
    size: str   # key of benchmarks.problem.SIZES, or BxHxW

    @property
    def element_size(self) -> int:
        return 4 if self.dtype == "fp32" else 2


CASES = (Case("C150-fp32", 150, "fp32", "half"), Case("C150-bf16", 150, "bf16", "half"),
         Case("C19-fp32", 19, "fp32", "full"), Case("C19-bf16", 19, "bf16", "full"))


RESIDENT = -1  # Config.chunk of the one-read layout
PAIRS = -2     # and of its 16-bit form, two pixels to a 32-bit word
SPLIT = -3     # and of the pairs split between two threads (vector 1); in fp32, of each
               # pixel split between two threads (fused_layout.SPLIT_PLANES)


def _c(vector, warps, stages, max_programs, chunk=None, sum_chunk=None, kept=None) -> Config:
    return Config(vector, warps, stages, max_programs, chunk, sum_chunk, kept)


ONE_SUM = 256     # Config.sum_chunk of one max over all planes, then one sum
RUNNING_SUM = 16  # and of a running max and sum over steps of 16 planes
# Most promising first. Every one-read candidate takes a tile or two per program: the
# persistent grids of the one-read layouts (256 programs), the tiles staged through shared
# memory, one bf16 pixel per thread, the sweeps on persistent grids and their chunk loops
# pipelined through cp.async were all slower than these on an H200 (docs/kernel.md, "Tuning
# the large-C sweeps" and "The next tiles staged through shared memory") and are no longer
# tried. Two sweeps stay: they are the layout of the logits that do not fit the others.
CANDIDATES = {
    "C150-fp32": [
        _c(1, 4, 1, ONE_TILE_PROGRAMS, RESIDENT),  # the library's default: one read, 2 per SM,
                                               # one max then one sum, its exponentials kept
                                               # for the gradient, one tile per program (no
                                               # tile loop, H200, 2026-11-27)
        _c(1, 4, 1, ONE_TILE_PROGRAMS, SPLIT),  # each pixel's planes split between two
                                               # threads, the tile in two rounds: 4 programs
                                               # per SM under the 128-register cap (not yet
                                               # timed)
        _c(1, 4, 1, DEFAULT_PROGRAMS, RESIDENT),  # the default, two tiles per program (the
                                               # default until 2026-11-27)
        _c(1, 4, 1, DEFAULT_PROGRAMS, RESIDENT, RUNNING_SUM),  # a running sum, kept
        _c(1, 4, 1, DEFAULT_PROGRAMS, RESIDENT, RUNNING_SUM, kept=False),  # the gradient's
                                               # exponentials taken again (until 2026-11-27)
        _c(2, 4, 1, DEFAULT_PROGRAMS, 16),     # the sweeps: 5 x 256 px per SM
        _c(2, 4, 1, DEFAULT_PROGRAMS, 8),      # their default until measured (H200, 2026-11-26)
    ],
    "C150-bf16": [
        _c(1, 4, 1, ONE_TILE_PROGRAMS, SPLIT),  # the library's default: each pair's planes
                                               # split between two threads, 75 words each,
                                               # 4 programs per SM, one tile per program
                                               # (H200, 2026-11-27), the sum's exponentials
                                               # kept as float16 under a 128-register cap
        _c(1, 4, 1, ONE_TILE_PROGRAMS, SPLIT, kept=False),  # the same, taken again
        _c(2, 4, 1, DEFAULT_PROGRAMS, PAIRS, kept=False),  # a pair per thread, every plane:
                                               # 2 per SM (the default until 2026-11-27)
        _c(2, 4, 1, DEFAULT_PROGRAMS, PAIRS),  # the same keeping the sum's exponentials
        _c(2, 4, 1, DEFAULT_PROGRAMS, PAIRS, RUNNING_SUM, kept=False),  # the running sum
        _c(2, 4, 1, DEFAULT_PROGRAMS, 16),     # the sweeps: 6 x 256 px per SM
        _c(4, 4, 1, DEFAULT_PROGRAMS, 8),      # their default until measured (H200, 2026-11-26)
    ],
    # C = 19 (planes in registers): persistent grids that fit in one wave (the program count
    # is rounded to a power of two: 1024 programs of 7 per SM would leave a second wave).
    "C19-fp32": [
        _c(2, 4, 1, DEFAULT_PROGRAMS),         # the library's default
        _c(2, 4, 1, 528),                      # 512 programs, 72 registers: 0.55 waves
        _c(2, 2, 1, 1056),                     # 1024 programs of 64 threads: 0.55 waves
        _c(4, 4, 1, 264),                      # 256 programs, 194 registers: 0.97 waves
    ],
    "C19-bf16": [
        _c(4, 4, 1, DEFAULT_PROGRAMS),         # the library's default
        _c(2, 4, 1, 1056),                     # 1024 programs, 64 registers: 0.97 waves
        _c(4, 4, 1, 264),                      # 256 programs, 168 registers: 0.65 waves
        _c(4, 2, 1, 528),                      # 512 programs of 64 threads: 0.65 waves
    ],
}


def candidates(case: Case) -> list[Config]:
    """The configurations tried for ``case``, the library's default first."""
    return CANDIDATES[case.tag]


QUICK = {"C150-fp32": 4, "C150-bf16": 4}  # configs --quick times, the first of each case


def quick(case: Case) -> list[Config]:
    """``--quick``: at C = 150 the default (one tile per program), for fp32 each pixel split
    between two threads, two tiles per program and the running sum, for the split pairs
    their exponentials taken again and a pair per thread, with and without; at C = 19 the
    default (whose whole call the sweep times)."""
    return candidates(case)[:QUICK.get(case.tag, 1)]


def configure(problem, config: Config):
    """Set ``config`` on a ``Problem`` instance (returned): launch attributes and class layout."""
    from fastmtl.ops import fused as ops
    from fastmtl.ops import fused_layout as layout

    problem.vector, problem.warps, problem.stages = config.vector, config.warps, config.stages
    problem.max_programs, problem.block_p = config.max_programs, config.block_p
    problem.asm_planes = problem.pairs = problem.split = problem.one_read = problem.kept = False
    problem.sum_chunk = layout.SUM_CHUNK
    if config.chunk == SPLIT and problem.x_dtype == torch.float32:
        assert problem.flat and problem.C % 2 == 0, "split pixels: one pixel axis, even C"
        problem.use_resident()
        problem.split = True
    elif config.chunk in (PAIRS, SPLIT):
        problem.use_pairs(split=config.chunk == SPLIT)
    elif config.chunk == RESIDENT:
        problem.use_resident()
    elif config.chunk is None:
        problem.classes = layout.class_layout(problem.C, problem.flags["HAS_SEM"], config.vector,
                                              2 if problem.acc_fp64 else 1, ops.MAX_BLOCK_C)
    else:
        problem.classes = (0, config.chunk, -(-problem.C // config.chunk))
    if config.sum_chunk is not None:
        problem.sum_chunk = config.sum_chunk
    if config.kept is not None:
        problem.kept = config.kept
    return problem


def launch_settings(problem) -> tuple:
    """What a launch of the fused pass depends on besides the tensors: the grid (programs,
    tiles per program) rather than its cap, which one tile per program sets from the size."""
    return (problem.vector, problem.warps, problem.stages, problem.fused_grid()[:2],
            problem.block_p, tuple(problem.classes), problem.asm_planes, problem.pairs,
            problem.split, problem.sum_chunk, problem.kept)


def forward_args(predictions: dict, targets: dict, log_vars):
    """The arguments of ``fastmtl.ops.fused._forward`` (after ``launch``) for the three-task
    loss with log-variances, every gradient written."""
    from fastmtl.ops import fused as ops
    from fastmtl.weighting import uncertainty_factors

    tasks = ("semantic", "instance", "depth")
    factors, regulariser = uncertainty_factors(tasks, "kendall")
    detach = lambda v: v.detach()  # noqa: E731
    return (detach(predictions["semantic"]), targets["semantic"], None,
            detach(predictions["instance"]), targets["instance"], targets["instance_mask"],
            detach(predictions["depth"]), targets["depth"], log_vars.detach(), [0, 1, 2],
            [float(f) for f in factors], [float(r) for r in regulariser], True, 255, True,
            ops.MAX_BLOCK_C)


def make_problem(args, gx, go, gd):
    from fastmtl.ops import fused_layout as layout

    x, t, cw, o, g, m, d, z = args[:8]
    return layout.Problem(x, t, cw, o, g, m, d, z, gx, go, gd, args[13], args[15])


class Capture:
    """A ``launch`` for ``Problem.launch_fused`` that keeps the compiled kernel it returns."""

    def __init__(self):
        self.kernel = None

    def __call__(self, fn):
        capture = self

        class Grid:
            def __getitem__(self, grid):
                def run(*a, **kw):
                    capture.kernel = fn[grid](*a, **kw)
                    return capture.kernel
                return run

        return Grid()


def resident_programs(registers: int, warps: int, shared: int = 0) -> int:
    """Programs per SM by the occupancy formula (sm_90: 65536 registers, 64 warps, 228 KB)."""
    per_thread = -(-max(registers, 1) // 8) * 8
    by_shared = (228 * 1024) // shared if shared else 64
    return min(65536 // (per_thread * 32 * warps), 64 // warps, by_shared)


def _relative_error(a, b) -> float:
    """max |a - b| / max |b| (inf where a holds a non-finite value)."""
    if a.numel() == 0:
        return 0.0
    if not bool(torch.isfinite(a).all()):
        return float("inf")
    wide = torch.float64 if a.dtype == torch.float64 else torch.float32
    scale = b.abs().max().to(torch.float64).item()
    return (a.to(wide) - b.to(wide)).abs().max().to(torch.float64).item() / max(scale, 1e-30)


def tolerance(case: Case) -> float:
    # Same arithmetic per pixel; chunking changes the order of the running max and sum.
    return 1e-5 if case.dtype == "fp32" else 2e-2


def run_case(case: Case, configs: list[Config], device, copy_gbps: float, repeats: int,
             deadline: float, log=print) -> dict:
    """Check and time every config of ``case`` (until ``deadline``, a time.monotonic())."""
    from benchmarks.problem import DTYPES, Problem, make_inputs, minimal_bytes_per_pixel, parse_size
    from benchmarks.timing import measure, release, summarize
    from fastmtl.ops import fused as ops
    from fastmtl.ops import fused_layout as layout

    label, (B, H, W) = parse_size(case.size)
    bench = Problem(label, B, H, W, case.classes, case.dtype, "int64")
    predictions, targets, log_vars = make_inputs(bench, device)
    args = forward_args(predictions, targets, log_vars)
    out = ops._forward(lambda k: k, *args)
    ref_grads, state = out[3:6], out[6]
    nbytes = bench.pixels * minimal_bytes_per_pixel(case.classes, DTYPES[case.dtype])
    grads = tuple(torch.empty_like(v) for v in ref_grads)
    sync = lambda: torch.cuda.synchronize(device) if device.type == "cuda" else None  # noqa: E731
    rows, skipped = [], []
    default = make_problem(args, *grads)  # the library's own configuration
    # The one-byte labels the pre-pass leaves for the fused pass (fused_layout.COMPACT_LABELS).
    labels = layout.compact_labels(args[1], case.classes, args[13]) if default.compact else None
    part = torch.empty((3, default.fused_grid()[0]), dtype=torch.float32, device=device)
    default.launch_fused(lambda k: k, args[:8], *grads, state, part, True, state, labels)
    ref_sums = part.double().sum(1)
    for config in configs:
        if time.monotonic() > deadline:
            skipped.append(config.name)
            continue
        row = dict(case=case.tag, config=config.name, **asdict(config), block_p=config.block_p,
                   library_default=False)
        try:
            problem = configure(make_problem(args, *grads), config)
            row["library_default"] = launch_settings(problem) == launch_settings(default)
            nprog, per_program, _, n_tiles = problem.fused_grid()
            row.update(programs=nprog, tiles_per_program=per_program, tiles=n_tiles,
                       classes_layout=list(problem.classes))
            part = torch.empty((3, nprog), dtype=torch.float32, device=device)
            for v in grads:
                v.fill_(float("nan"))
            capture = Capture()
            start = time.monotonic()
            problem.launch_fused(capture, args[:8], *grads, state, part, True, state, labels)
            sync()
            row["first_launch_s"] = time.monotonic() - start  # compile included
            sums = part.double().sum(1)
            row["grad_error"] = max(_relative_error(a, b) for a, b in zip(grads, ref_grads))
            row["sum_error"] = _relative_error(sums, ref_sums)
            row["correct"] = bool(row["grad_error"] <= tolerance(case)
                                  and row["sum_error"] <= 1e-4)
            kernel = capture.kernel
            regs = getattr(kernel, "n_regs", None)
            shared = getattr(getattr(kernel, "metadata", None), "shared", None)
            row.update(registers=regs, spills=getattr(kernel, "n_spills", None), shared=shared)
            if regs and device.type == "cuda":
                row["programs_per_sm"] = resident_programs(regs, config.warps, shared or 0)
                sms = torch.cuda.get_device_properties(device).multi_processor_count
                row["waves"] = round(nprog / (sms * row["programs_per_sm"]), 2)
            call = lambda: problem.launch_fused(lambda k: k, args[:8], *grads, state,  # noqa: E731
                                                part, True, state, labels)
            # CUDA: triton.testing.do_bench, L2 flushed before each repetition.
            stats = summarize(measure(call, device, warmup=1, repeats=repeats))
            row.update(median_ms=stats["median_s"] * 1e3, p25_ms=stats["p25_s"] * 1e3,
                       p75_ms=stats["p75_s"] * 1e3,
                       pct_copy=100 * nbytes / stats["median_s"] / 1e9 / copy_gbps)
            log(f"{case.tag:10} {config.name:24} {row['median_ms']:8.3f} ms "
                f"{row['pct_copy']:5.1f}% copy  regs {regs} spills {row['spills']} "
                f"programs {nprog} ({row.get('programs_per_sm')}/SM)  "
                f"{'ok' if row['correct'] else 'WRONG'} (grad {row['grad_error']:.1e}, "
                f"sums {row['sum_error']:.1e})")
        except Exception as exc:  # one failing config must not end the run
            traceback.print_exc()
            row["error"] = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
            log(f"{case.tag:10} {config.name:24} error: {row['error']}")
        rows.append(row)
    floors = []
    if default.one_read and time.monotonic() <= deadline:
        # what the default's loads and stores of the class planes cost with no arithmetic
        # (benchmarks/access_floor.py)
        from benchmarks import access_floor

        timer = lambda call: summarize(measure(call, device, 1, repeats))["median_s"]  # noqa: E731
        try:
            floors = access_floor.floor_rows(default, args[0].contiguous(), timer, copy_gbps)
            for f in floors:
                log(f"{case.tag:10} access floor, {f['floor']:4} {f['median_ms']:8.3f} ms "
                    f"{f['pct_copy']:5.1f}% copy of its {f['bytes'] / 1e6:.0f} MB"
                    f"{'' if f['correct'] else '  WRONG'}")
        except Exception as exc:  # the configs' figures stand without it
            traceback.print_exc()
            floors = [dict(error=f"{type(exc).__name__}: {str(exc).strip()[:300]}")]
    del args, out, grads, ref_grads, state, labels
    release(device)
    best = _best(rows)
    for row in [r for r in rows if r.get("library_default")] + ([best] if best else []):
        if "whole_call" in row or time.monotonic() > deadline + WHOLE_CALL_GRACE:
            continue
        config = next(c for c in configs if c.name == row["config"])
        try:
            row["whole_call"] = whole_call(config, predictions, targets, log_vars, device, repeats,
                                           nbytes, copy_gbps)
            log(f"{case.tag:10} {config.name:24} whole call: eager "
                f"{row['whole_call']['eager_ms']:.3f} ms, graph {row['whole_call']['graph_ms']} ms")
        except Exception as exc:  # the kernel-alone figures stand without it
            traceback.print_exc()
            row["whole_call"] = {"error": f"{type(exc).__name__}: {str(exc).strip()[:300]}"}
        if row.get("library_default") and "eager_ms" in row["whole_call"]:
            # The same call with the labels read as given by both passes: what the pre-pass's
            # one-byte copy saves (or costs).
            try:
                row["whole_call_wide_labels"] = whole_call(
                    config, predictions, targets, log_vars, device, repeats, nbytes, copy_gbps,
                    compact_labels=False)
            except Exception:  # the figures above stand without it
                traceback.print_exc()
    del predictions, targets, log_vars
    release(device)
    return dict(case=case.tag, classes=case.classes, dtype=case.dtype, shape=f"{B}x{H}x{W}",
                bytes_per_pixel=nbytes // bench.pixels, rows=rows, skipped=skipped,
                floors=floors)


WHOLE_CALL_GRACE = 40  # seconds past the budget still spent on the whole-call timings


def whole_call(config, predictions, targets, log_vars, device, repeats: int,
               nbytes: int, copy_gbps: float, compact_labels: bool = True) -> dict:
    """The whole forward + backward call of the triton loss with ``config`` (a ``Config``, or
    a function that sets up a ``Problem``) set on every problem the op builds: eager median
    and CUDA-graph replay. ``compact_labels`` False: the fused pass reads the labels as given
    (``fused_layout.COMPACT_LABELS``)."""
    from benchmarks.implementations import IMPLEMENTATIONS, step
    from benchmarks.timing import graph_times, measure, summarize
    from fastmtl.ops import fused
    from fastmtl.ops import fused_layout
    from fastmtl.ops.common import clear_call_caches

    library = fused.Problem
    setup = config if callable(config) else lambda problem: configure(problem, config)

    class Configured(library):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            setup(self)

    loss = IMPLEMENTATIONS["triton"].build()
    fn = lambda: step(loss, predictions, targets, log_vars, True)  # noqa: E731
    fused.Problem = Configured
    clear_call_caches()  # problems kept from earlier calls carry the library's config
    compact, fused_layout.COMPACT_LABELS = fused_layout.COMPACT_LABELS, compact_labels
    try:
        eager = summarize(measure(fn, device, 2, repeats))["median_s"]
        graph = graph_times(fn, device, repeats)
    finally:
        fused.Problem = library
        clear_call_caches()
        fused_layout.COMPACT_LABELS = compact
    graph_s = summarize(graph)["median_s"] if graph else None
    return {"eager_ms": 1e3 * eager, "graph_ms": 1e3 * graph_s if graph_s else None,
            "pct_copy_eager": 100 * nbytes / eager / 1e9 / copy_gbps,
            "pct_copy_graph": 100 * nbytes / graph_s / 1e9 / copy_gbps if graph_s else None}


def _best(rows: list[dict]) -> Optional[dict]:
    timed = [r for r in rows if r.get("median_ms") and r.get("correct")]
    return min(timed, key=lambda r: r["median_ms"]) if timed else None


def markdown(result: dict) -> str:
    lines = [f"# Fused pass configurations ({result['device']})", "",
             f"`{result['command']}`, {result['date']}, commit {result.get('commit')}; copy "
             f"bandwidth {result['copy_gbps']:.0f} GB/s. Kernel alone (fused_loss_kernel, "
             "WRITE_GRAD), do_bench median with L2 flushed; % copy on the minimal bytes "
             "of the fused pass. ok: gradients and partial sums match the default "
             "configuration's. * best correct row of the case; (default): the library's choice.",
             ""]
    for case in result["cases"]:
        best = _best(case["rows"])
        lines += [f"## {case['case']}: {case['shape']}, C={case['classes']}, {case['dtype']}, "
                  f"{case['bytes_per_pixel']} B/px", "",
                  "| | config | ms | % copy | check | regs | spills | smem | programs | per SM "
                  "| waves | first launch s |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        order = sorted(case["rows"], key=lambda r: r.get("median_ms") or float("inf"))
        for r in order:
            mark = "*" if r is best else ""
            name = r["config"] + (" (default)" if r.get("library_default") else "")
            if "error" in r:
                lines.append(f"| | {name} | error: {r['error'][:120]} | | | | | | | | | |")
                continue
            check = "ok" if r.get("correct") else (
                f"WRONG (grad {r.get('grad_error', float('nan')):.1e}, "
                f"sums {r.get('sum_error', float('nan')):.1e})")
            lines.append(
                f"| {mark} | {name} | {r['median_ms']:.3f} | {r['pct_copy']:.1f} | {check} "
                f"| {r.get('registers')} | {r.get('spills')} | {r.get('shared')} "
                f"| {r['programs']} | {r.get('programs_per_sm')} | {r.get('waves')} "
                f"| {r.get('first_launch_s', 0):.1f} |")
        for r in order:
            whole = r.get("whole_call")
            if whole and "eager_ms" in whole:
                graph = (f"{whole['graph_ms']:.3f} ms ({whole['pct_copy_graph']:.1f}% copy)"
                         if whole.get("graph_ms") else "-")
                lines += ["", f"Whole forward + backward call, {r['config']}: eager "
                          f"{whole['eager_ms']:.3f} ms ({whole['pct_copy_eager']:.1f}% copy), "
                          f"graph replay {graph}."]
            elif whole:
                lines += ["", f"Whole call, {r['config']}: {whole.get('error')}"]
            wide = r.get("whole_call_wide_labels")
            if wide:
                graph = f"{wide['graph_ms']:.3f} ms" if wide.get("graph_ms") else "-"
                lines += ["", f"The same call with the labels read as given by both passes "
                          f"(no one-byte copy): eager {wide['eager_ms']:.3f} ms, graph replay "
                          f"{graph}."]
        for f in case.get("floors", []):
            if "error" in f:
                lines += ["", f"Access floor: {f['error']}"]
                continue
            lines += ["", f"Access floor, {f['floor']} (the default's loads and stores of the "
                      f"class planes alone, benchmarks/access_floor.py): {f['median_ms']:.3f} ms, "
                      f"{f['pct_copy']:.1f}% of copy on its own {f['bytes'] / 1e6:.0f} MB"
                      f"{'' if f['correct'] else ', WRONG'}."]
        if case["skipped"]:
            lines += ["", f"Skipped (budget): {', '.join(case['skipped'])}"]
        lines.append("")
    if result.get("skipped_cases"):
        lines.append(f"Cases skipped (budget): {', '.join(result['skipped_cases'])}")
    return "\n".join(lines) + "\n"


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.tune",
                                description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder for tune.json and tune.md")
    p.add_argument("--budget", type=float, default=480.0,
                   help="seconds for the whole run; configs past it are skipped (default 480)")
    p.add_argument("--quick", action="store_true",
                   help="the first configs of each case (tune.QUICK: at C=150 the default, "
                        "fp32's split pixels, two tiles per program and running sum, the "
                        "split pairs' exponentials taken again and a pair per thread; at C=19 the "
                        "default, its whole call with and without the one-byte labels); "
                        "10 repetitions")
    p.add_argument("--cases", nargs="+", choices=[c.tag for c in CASES],
                   help="cases to run (default all: C=150 first)")
    p.add_argument("--repeats", type=int, help="do_bench budget in calls (default 30; --quick 10)")
    p.add_argument("--list", action="store_true", help="print the configs per case and exit")
    return p.parse_args(argv)


def plan(args) -> list[tuple[Case, list[Config]]]:
    chosen = [c for c in CASES if args.cases is None or c.tag in args.cases]
    if args.quick:
        return [(c, quick(c)) for c in chosen]
    return [(c, candidates(c)) for c in chosen]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    todo = plan(args)
    if args.list:
        for case, configs in todo:
            print(f"{case.tag}: " + "; ".join(c.name for c in configs))
        return 0
    if not torch.cuda.is_available():
        print("benchmarks.tune times the compiled kernels: it needs a CUDA device",
              file=sys.stderr)
        return 2
    from benchmarks.environment import environment
    from benchmarks.timing import copy_bandwidth, release

    started = time.monotonic()
    deadline = started + args.budget
    device = torch.device("cuda")
    repeats = args.repeats or (10 if args.quick else 30)
    env = environment(device)
    copy = copy_bandwidth(device, 2048 * 2**20)
    release(device)
    print(f"{env['device']['name']}: copy bandwidth {copy['gbps']:.1f} GB/s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    result = dict(kind="tune", date=datetime.date.today().isoformat(),
                  command="python -m benchmarks.tune " + " ".join(argv),
                  device=env["device"]["name"], commit=env["versions"].get("fastmtl_git"),
                  copy_gbps=copy["gbps"], budget_s=args.budget, repeats=repeats, cases=[],
                  skipped_cases=[], environment=env)

    def save():
        result["elapsed_s"] = time.monotonic() - started
        (args.out / "tune.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
        (args.out / "tune.md").write_text(markdown(result))

    for case, configs in todo:
        if time.monotonic() > deadline:
            result["skipped_cases"].append(case.tag)
            continue
        result["cases"].append(run_case(case, configs, device, copy["gbps"], repeats, deadline,
                                        log=lambda s: print(s, flush=True)))
        save()
    save()
    print("\n" + markdown(result))
    print(f"wrote {args.out / 'tune.json'} and {args.out / 'tune.md'} "
          f"in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
