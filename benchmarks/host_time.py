"""Where the host time of a loss call goes: ``cProfile`` over back-to-back fwd+bwd calls.

    python -m benchmarks.host_time [--size 2x128x256] [--calls 200] [--impls triton upsample-fused]

At a small size the device finishes long before the host has issued the next
call, so the wall clock per call is the host's cost: Python checks, autograd
and custom-op dispatch, Triton's launcher. Prints, per implementation, the wall
clock per call without the profiler, then the functions that took the most
time under it (cumulative and own time).
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

import torch

from benchmarks.implementations import IMPLEMENTATIONS, step
from benchmarks.problem import Problem, parse_size


def wall_per_call(call, device, calls: int) -> float:
    torch.cuda.synchronize(device) if device.type == "cuda" else None
    start = time.perf_counter()
    for _ in range(calls):
        call()
    torch.cuda.synchronize(device) if device.type == "cuda" else None
    return (time.perf_counter() - start) / calls


def profile(impl_name: str, problem: Problem, device: torch.device, calls: int, top: int) -> str:
    impl = IMPLEMENTATIONS[impl_name]
    why = impl.unavailable(device)
    if why:
        return f"## {impl_name}: skipped ({why})\n"
    predictions, targets, log_vars = impl.inputs(problem, device)
    loss = impl.build(check_labels=False)
    call = lambda: step(loss, predictions, targets, log_vars, True)  # noqa: E731
    for _ in range(10):
        call()
    wall = wall_per_call(call, device, calls)
    profiler = cProfile.Profile()
    profiler.runcall(lambda: [call() for _ in range(calls)])
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return (f"## {impl_name}, {problem.shape}, C={problem.classes}, {problem.dtype}: "
            f"{wall * 1e6:.0f} us per fwd+bwd call (wall, no profiler)\n\n{out.getvalue()}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.host_time", description=__doc__.splitlines()[0])
    p.add_argument("--size", default="2x128x256")
    p.add_argument("--classes", type=int, default=19)
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--impls", nargs="+", default=["triton", "upsample-fused"], choices=list(IMPLEMENTATIONS))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    label, (b, h, w) = parse_size(args.size)
    problem = Problem(label, b, h, w, args.classes, args.dtype)
    for name in args.impls:
        print(profile(name, problem, torch.device(args.device), args.calls, args.top), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
