"""``python -m benchmarks.tune_prepass --out DIR``: launch shapes of the fused op's pre-pass.

The pre-pass (``normaliser_kernel`` then ``prepare_kernel``) reads the targets once
(int64 labels, the instance mask, the depth targets: 13 B per pixel at fp32, 11 at
bf16) and writes the labels as bytes, for the normalisers the fused pass needs before it
writes a gradient. For C = 19 at 8 x 1024 x 2048 (bf16 and fp32 inputs, as
``benchmarks.problem`` makes them), each candidate (pixels per thread, warps per program,
program cap; ``Problem.configure_prepass``) is

- checked: the normalisers and the label-check triple equal the default's exactly (the
  benchmark has no class weights, so every normaliser is a count);
- timed: both launches together, captured in a CUDA graph and replayed
  (``benchmarks.timing.graph_times``: do_bench with the L2 flushed), median, and as % of
  this device's copy bandwidth on the bytes moved. Not the launches called one by one:
  through Triton's own launcher the host needs about as long to issue them as the GPU
  to run them, and the first run of this harness (H200, 2026-11-27) timed the host.
  On CPU (``--smoke``) the calls themselves are timed.

Then the whole forward + backward call (eager and CUDA-graph replay, % of copy on the
benchmark's minimal bytes, as ``python -m benchmarks`` counts them) with the default
and with the fastest candidate. ``tune_prepass.json`` and ``tune_prepass.md`` are
written under ``--out``; ``--smoke`` runs the candidates on CPU under
``TRITON_INTERPRET=1`` at a tiny size.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch

# (pixels per thread, warps per program, most programs), the library's default first.
# 4752 / 3168 / 1584: 3 / 2 / 1 whole waves of 12 programs per SM on 132 SMs.
CANDIDATES = [(4, 4, 4752), (4, 4, 4096), (4, 4, 3168), (2, 4, 4752), (8, 4, 4752),
              (4, 8, 4752), (4, 4, 9504), (8, 4, 2376), (4, 4, 1584)]
CASES = {"bf16": (8, 1024, 2048), "fp32": (8, 1024, 2048)}
SMOKE = (1, 16, 40)


def _prepass_call(problem, args, norm_part, bad_part, state, bad, compact):
    from fastmtl import kernels as K
    from fastmtl.ops.common import REDUCE_BLOCK

    coef, positions, factors = args[8:11]
    launch = lambda kernel: kernel  # noqa: E731

    def call():
        problem.launch_normalisers(launch, args[:8], norm_part, bad_part, state, compact)
        K.prepare_kernel[(1,)](norm_part, bad_part, problem.n_pre, coef, *positions, *factors,
                               state, bad, HAS_COEF=True, USE_LOG_VARS=True,
                               BLOCK_R=REDUCE_BLOCK)
    return call


def run_case(dtype: str, size, device, copy_gbps, repeats: int, whole: bool, log=print) -> dict:
    from benchmarks.problem import DTYPES, Problem, make_inputs, minimal_bytes_per_pixel
    from benchmarks.timing import graph_times, measure, summarize
    from benchmarks.tune import forward_args, make_problem, whole_call

    B, H, W = size
    bench = Problem("custom", B, H, W, 19, dtype, "int64")
    predictions, targets, log_vars = make_inputs(bench, device)
    args = forward_args(predictions, targets, log_vars)
    # targets read (labels, mask, depth) and the one-byte labels written
    nbytes = bench.pixels * (8 + 1 + targets["depth"].element_size() + 1)
    rows, reference = [], None
    for vector, warps, programs in CANDIDATES:
        row = dict(vector=vector, warps=warps, max_programs=programs)
        try:
            problem = make_problem(args, None, None, None)
            problem.configure_prepass(vector, warps, programs)
            n = problem.n_pre
            row.update(programs=n, tiles_per_program=-(-problem.pre_grid[3] // n))
            norm_part = torch.empty((3, n), dtype=torch.float32, device=device)
            bad_part = torch.empty((3, n), dtype=torch.int64, device=device)
            state = torch.full((4, 4), float("nan"), dtype=torch.float64, device=device)
            bad = torch.full((3,), -1, dtype=torch.int64, device=device)
            compact = problem.compact_buffer(device)
            call = _prepass_call(problem, args, norm_part, bad_part, state, bad, compact)
            call()
            result = (state[0].tolist(), bad.tolist(),
                      None if compact is None else compact.flatten()[::997].tolist())
            reference = reference or result
            row["correct"] = result == reference
            times = graph_times(call, device, repeats) or measure(call, device, 2, repeats)
            stats = summarize(times)
            row.update(median_us=stats["median_s"] * 1e6,
                       pct_copy=100 * nbytes / stats["median_s"] / 1e9 / copy_gbps)
            log(f"{dtype} V{vector} w{warps} p{programs}: {row['median_us']:.1f} us "
                f"{row['pct_copy']:.1f}% copy, {n} programs, {'ok' if row['correct'] else 'WRONG'}")
        except Exception as exc:  # one failing shape must not end the run
            traceback.print_exc()
            row["error"] = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
        rows.append(row)
    timed = [r for r in rows if r.get("correct")]
    if whole and timed:
        best = min(timed, key=lambda r: r["median_us"])
        call_bytes = bench.pixels * minimal_bytes_per_pixel(19, DTYPES[dtype])
        for row in {id(r): r for r in (rows[0], best)}.values():
            shape = (row["vector"], row["warps"], row["max_programs"])
            row["whole_call"] = whole_call(lambda p, s=shape: p.configure_prepass(*s),
                                           predictions, targets, log_vars, device, repeats,
                                           call_bytes, copy_gbps)
            log(f"{dtype} V{shape[0]} w{shape[1]} p{shape[2]} whole call: {row['whole_call']}")
    return dict(dtype=dtype, shape=f"{B}x{H}x{W}", bytes=nbytes, rows=rows)


def markdown(result: dict) -> str:
    lines = [f"# Pre-pass launch shapes ({result['device']})", "",
             f"`{result['command']}`, commit {result.get('commit')}; copy bandwidth "
             f"{result['copy_gbps']:.0f} GB/s. normaliser_kernel + prepare_kernel replayed "
             "from a CUDA graph, do_bench median with L2 flushed; % copy on the bytes moved "
             "(labels, mask, depth read, "
             "one-byte labels written). First row: the library's default. Whole call: forward "
             "+ backward of the `triton` loss, eager median / CUDA-graph replay, % of copy on "
             "the benchmark's minimal bytes.", ""]
    for case in result["cases"]:
        lines += [f"## C=19, {case['shape']}, {case['dtype']} ({case['bytes'] / 1e6:.0f} MB)",
                  "", "| V | warps | max programs | programs | tiles each | us | % copy | check "
                  "| whole call eager / graph ms | % copy eager / graph |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in case["rows"]:
            head = f"| {r['vector']} | {r['warps']} | {r['max_programs']} |"
            if "error" in r:
                lines.append(f"{head} error: {r['error'][:100]} | | | | | | |")
                continue
            w = r.get("whole_call")
            call = (f"{w['eager_ms']:.3f} / {w['graph_ms']:.3f} | {w['pct_copy_eager']:.1f} / "
                    f"{w['pct_copy_graph']:.1f}" if w and w.get("graph_ms") else " | ")
            lines.append(f"{head} {r['programs']} | {r['tiles_per_program']} | "
                         f"{r['median_us']:.1f} | {r['pct_copy']:.1f} | "
                         f"{'ok' if r['correct'] else 'WRONG'} | {call} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(prog="python -m benchmarks.tune_prepass",
                                description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--budget", type=float, default=120.0,
                   help="seconds; the fp32 case is skipped past it (default 120)")
    p.add_argument("--smoke", action="store_true", help="CPU, TRITON_INTERPRET=1, tiny size")
    args = p.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        print("tune_prepass needs a CUDA device (--smoke checks the script on CPU)",
              file=sys.stderr)
        return 2
    from benchmarks.environment import environment
    from benchmarks.timing import copy_bandwidth

    device = torch.device("cpu" if args.smoke else "cuda")
    env = environment(device)
    copy = copy_bandwidth(device, 2**20 if args.smoke else 2048 * 2**20)
    result = dict(kind="tune-prepass", device=env["device"]["name"],
                  commit=env["versions"].get("fastmtl_git"), copy_gbps=copy["gbps"],
                  command="python -m benchmarks.tune_prepass " + " ".join(argv), cases=[],
                  environment=env)
    started = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    for dtype, size in CASES.items():
        if time.monotonic() - started > args.budget:
            break
        result["cases"].append(run_case(dtype, SMOKE if args.smoke else size, device,
                                        copy["gbps"], 2 if args.smoke else args.repeats,
                                        whole=not args.smoke,
                                        log=lambda s: print(s, flush=True)))
        result["elapsed_s"] = time.monotonic() - started
        (args.out / "tune_prepass.json").write_text(json.dumps(result, indent=2, default=str)
                                                    + "\n")
        (args.out / "tune_prepass.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
