"""``python -m benchmarks.tune_prepass --out DIR``: launch shapes of the fused op's pre-pass.

The pre-pass (``normaliser_kernel`` then ``prepare_kernel``) reads the targets once
(int64 labels, the instance mask, the depth targets: 13 B per pixel at fp32, 11 at
bf16) for the normalisers the fused pass needs before it writes a gradient. For
C = 19 at 8 x 1024 x 2048 (fp32 and bf16 inputs, as ``benchmarks.problem`` makes
them), each candidate (pixels per thread, program cap, tiles whose loads a program
issues together; ``Problem.configure_prepass``) is

- checked: the normalisers and the label-check triple must equal the default's
  exactly (counts are exact);
- timed: both launches together, ``benchmarks.timing.measure`` (do_bench with the L2
  flushed), median, and as % of this device's copy bandwidth on the bytes read.

``tune_prepass.json`` and ``tune_prepass.md`` are written under ``--out``.
``--smoke`` runs the same on CPU under ``TRITON_INTERPRET=1`` at a tiny size.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import torch

# (pixels per thread, most programs, tiles issued together), the library's default first.
CANDIDATES = [(4, 512, 4), (4, 4096, 1), (4, 4096, 2), (4, 512, 2), (2, 1024, 4), (4, 1024, 4),
              (8, 512, 2), (4, 16384, 1), (4, 256, 8)]
CASES = {"fp32": (8, 1024, 2048), "bf16": (8, 1024, 2048)}
SMOKE = (1, 16, 40)


def _prepass_call(problem, args, norm_part, bad_part, state, bad):
    from fastmtl import kernels as K
    from fastmtl.ops.fused import REDUCE_BLOCK

    x, t, cw, o, g, m, d, z, coef, positions, factors = args[:11]
    launch = lambda kernel: kernel  # noqa: E731

    def call():
        problem.launch_normalisers(launch, args[:8], norm_part, bad_part, state)
        K.prepare_kernel[(1,)](norm_part, bad_part, problem.n_pre, coef, *positions, *factors,
                               state, bad, HAS_COEF=True, USE_LOG_VARS=True,
                               BLOCK_R=REDUCE_BLOCK)
    return call


def run_case(dtype: str, size, device, copy_gbps, repeats: int, log=print) -> dict:
    from benchmarks.problem import DTYPES, Problem, make_inputs
    from benchmarks.timing import measure, summarize
    from benchmarks.tune import forward_args, make_problem

    B, H, W = size
    bench = Problem("custom", B, H, W, 19, dtype, "int64")
    predictions, targets, log_vars = make_inputs(bench, device)
    args = forward_args(predictions, targets, log_vars)
    e = torch.empty((), dtype=DTYPES[dtype]).element_size()
    nbytes = bench.pixels * (8 + 1 + targets["depth"].element_size())
    rows, reference = [], None
    for vector, programs, unroll in CANDIDATES:
        row = dict(dtype=dtype, vector=vector, max_programs=programs, unroll=unroll)
        try:
            problem = make_problem(args, None, None, None)
            problem.configure_prepass(vector, programs, unroll)
            n = problem.n_pre
            row.update(programs=n, tiles_per_program=problem.prepass[1])
            norm_part = torch.empty((3, n), dtype=torch.float32, device=device)
            bad_part = torch.empty((3, n), dtype=torch.int64, device=device)
            state = torch.full((4, 4), float("nan"), dtype=torch.float64, device=device)
            bad = torch.full((3,), -1, dtype=torch.int64, device=device)
            call = _prepass_call(problem, args, norm_part, bad_part, state, bad)
            call()
            result = (state[0].tolist(), bad.tolist())
            reference = reference or result
            row["correct"] = result == reference
            stats = summarize(measure(call, device, warmup=2, repeats=repeats))
            row.update(median_us=stats["median_s"] * 1e6,
                       pct_copy=100 * nbytes / stats["median_s"] / 1e9 / copy_gbps)
            log(f"{dtype} V{vector} p{programs} u{unroll}: {row['median_us']:.1f} us "
                f"{row['pct_copy']:.1f}% copy, {n} programs, {'ok' if row['correct'] else 'WRONG'}")
        except Exception as exc:  # one failing shape must not end the run
            traceback.print_exc()
            row["error"] = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
        rows.append(row)
    return dict(dtype=dtype, shape=f"{B}x{H}x{W}", bytes=nbytes, element_size=e, rows=rows)


def markdown(result: dict) -> str:
    lines = [f"# Pre-pass launch shapes ({result['device']})", "",
             f"`{result['command']}`, commit {result.get('commit')}; copy bandwidth "
             f"{result['copy_gbps']:.0f} GB/s. normaliser_kernel + prepare_kernel, do_bench "
             "median with L2 flushed; % copy on the target bytes read (labels, mask, depth). "
             "First row: the library's default.", ""]
    for case in result["cases"]:
        lines += [f"## C=19, {case['shape']}, {case['dtype']} ({case['bytes'] / 1e6:.0f} MB read)",
                  "", "| V | max programs | unroll | programs | tiles each | us | % copy | check |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in case["rows"]:
            if "error" in r:
                lines.append(f"| {r['vector']} | {r['max_programs']} | {r['unroll']} | error: "
                             f"{r['error'][:100]} | | | | |")
                continue
            lines.append(f"| {r['vector']} | {r['max_programs']} | {r['unroll']} | "
                         f"{r['programs']} | {r['tiles_per_program']} | {r['median_us']:.1f} | "
                         f"{r['pct_copy']:.1f} | {'ok' if r['correct'] else 'WRONG'} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(prog="python -m benchmarks.tune_prepass",
                                description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--repeats", type=int, default=30)
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
    for dtype, size in CASES.items():
        result["cases"].append(run_case(dtype, SMOKE if args.smoke else size, device,
                                        copy["gbps"], 2 if args.smoke else args.repeats,
                                        log=lambda s: print(s, flush=True)))
    result["elapsed_s"] = time.monotonic() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tune_prepass.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (args.out / "tune_prepass.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
