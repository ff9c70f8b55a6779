"""Where the host time of a loss call goes: ``cProfile`` over back-to-back fwd+bwd calls.

    python -m benchmarks.host_time [--size 2x128x256] [--calls 200] [--impls triton upsample-fused]
    python -m benchmarks.host_time --stub-launches      # on a CPU: the Python side alone

At a small size the device finishes long before the host has issued the next
call, so the wall clock per call is the host's cost: Python checks, autograd
and custom-op dispatch, Triton's launcher. Prints, per implementation, the wall
clock per call without the profiler, then the functions that took the most
time under it (cumulative and own time). ``--stub-launches`` replaces the fastmtl
ops' kernel launches by no-ops on CPU tensors (nothing is computed): what remains
is the Python side of a call (checks, autograd, allocations, the ops' own
bookkeeping), measurable without a GPU; Triton's launcher and the driver are not
in it.
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import pstats
import time

import torch

from benchmarks.implementations import IMPLEMENTATIONS, step
from benchmarks.problem import Problem, parse_size


STUBBABLE = ("triton", "upsample-fused")  # the fastmtl ops whose launches can be stubbed


class _NoLaunch:
    def __init__(self, kernel):
        pass

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


@contextlib.contextmanager
def stubbed_launches():
    """The fastmtl ops on CPU tensors with every kernel launch a no-op (see the module doc)."""
    from fastmtl.ops import fused, upsample
    from fastmtl.ops.common import launch_key

    stubs = {"launch_for": lambda t, key_args: (_NoLaunch, launch_key(key_args)),
             "check_device": lambda t: None}
    saved = [(m, name, getattr(m, name)) for m in (fused, upsample) for name in stubs
             if hasattr(m, name)]
    for m, name, _ in saved:
        setattr(m, name, stubs[name])
    try:
        yield
    finally:
        for m, name, value in saved:
            setattr(m, name, value)


def wall_per_call(call, device, calls: int) -> float:
    torch.cuda.synchronize(device) if device.type == "cuda" else None
    start = time.perf_counter()
    for _ in range(calls):
        call()
    torch.cuda.synchronize(device) if device.type == "cuda" else None
    return (time.perf_counter() - start) / calls


def _repeat(call, calls: int) -> None:
    # Each call's outputs are dropped before the next, as in wall_per_call and a training
    # loop: kept in a list, every call allocates fresh device memory and the allocator's
    # work shows up under torch.empty_like.
    for _ in range(calls):
        call()


def profile(impl_name: str, problem: Problem, device: torch.device, calls: int, top: int,
            stubbed: bool = False) -> str:
    impl = IMPLEMENTATIONS[impl_name]
    why = None if stubbed and impl_name in STUBBABLE else impl.unavailable(device)
    if why:
        return f"## {impl_name}: skipped ({why})\n"
    predictions, targets, log_vars = impl.inputs(problem, device)
    loss = impl.build(check_labels=False)
    call = lambda: step(loss, predictions, targets, log_vars, True)  # noqa: E731
    for _ in range(10):
        call()
    wall = wall_per_call(call, device, calls)
    profiler = cProfile.Profile()
    profiler.runcall(_repeat, call, calls)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    what = "Python side, launches stubbed" if stubbed else "wall, no profiler"
    return (f"## {impl_name}, {problem.shape}, C={problem.classes}, {problem.dtype}: "
            f"{wall * 1e6:.0f} us per fwd+bwd call ({what})\n\n{out.getvalue()}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.host_time", description=__doc__.splitlines()[0])
    p.add_argument("--size", default="2x128x256")
    p.add_argument("--classes", type=int, default=19)
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--impls", nargs="+", default=["triton", "upsample-fused"], choices=list(IMPLEMENTATIONS))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--stub-launches", action="store_true",
                   help="CPU tensors, every fastmtl kernel launch a no-op: the Python side alone")
    args = p.parse_args(argv)
    label, (b, h, w) = parse_size(args.size)
    problem = Problem(label, b, h, w, args.classes, args.dtype)
    device = torch.device("cpu" if args.stub_launches else args.device)
    with stubbed_launches() if args.stub_launches else contextlib.nullcontext():
        for name in args.impls:
            print(profile(name, problem, device, args.calls, args.top, args.stub_launches),
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
