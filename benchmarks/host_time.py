"""Where the host time of a loss call goes: ``cProfile`` over back-to-back fwd+bwd calls.

    python -m benchmarks.host_time [--size 2x128x256] [--calls 200] [--impls triton upsample-fused]
    python -m benchmarks.host_time --stub-launches      # on a CPU: the Python side alone
    python -m benchmarks.host_time --size full --dtype bf16 --cuda-api   # where the host waits
    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=functools_reduce \
        python -m benchmarks.host_time --stub-launches --bare --calls 200 --impls triton

At a small size the device finishes long before the host has issued the next
call, so the wall clock per call is the host's cost: Python checks, autograd
and custom-op dispatch, Triton's launcher. Prints, per implementation, the wall
clock per call without the profiler, then the functions that took the most
time under it (cumulative and own time). ``--stub-launches`` replaces the fastmtl
ops' kernel launches by no-ops on CPU tensors (nothing is computed): what remains
is the Python side of a call (checks, autograd, allocations, the ops' own
bookkeeping), measurable without a GPU; Triton's launcher and the driver are not
in it. The label check (``triton-check-labels``) then takes its CUDA path, with
rows of ordinary memory that each launch writes as a check of good labels. With
it the header also gives the median time from a call's start to each of its
launches, in order: where the host is behind, the device idles until the first, and a
call timed with the L2 flushed costs about the time to its longest kernel's launch plus
the kernels. ``--cuda-api`` (CUDA) times the calls under ``torch.profiler`` instead and
lists the CUDA runtime and driver functions the host spent its time in, per call
(launches, copies, events, and any allocation or synchronisation that makes the
host wait for the GPU), with the busiest operators by their own host time.
``--bare`` makes the calls with neither profiler nor timer, after 30 warm-up calls,
inside ``functools.reduce``: Valgrind's callgrind then counts the instructions of
those calls alone (as above; divide by ``--calls``), a measure of the host's work
that a shared, noisy CPU does not blur.
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import io
import pstats
import statistics
import time

import torch

from benchmarks.implementations import IMPLEMENTATIONS, step
from benchmarks.problem import Problem, parse_size


# the fastmtl calls whose launches can be stubbed
STUBBABLE = ("triton", "triton-check-labels", "upsample-fused")


class _NoLaunch:
    """Stands in for Triton 3.6's launcher of a compiled kernel (its C ``launch`` and the
    Python call around it, as ``fastmtl.ops.common`` takes them), doing nothing but noting
    when each launch came and calling ``written()``."""

    global_scratch_size = profile_scratch_size = 0
    launch_cooperative_grid = launch_pdl = False

    def __init__(self, times: list, written):
        self.times, self.written = times, written

    def launch(self, *args):
        self.times.append(time.perf_counter())
        self.written()

    __call__ = launch


class _NoRun:
    """Stands in for a compiled kernel whose launches do nothing but ``written()`` (what
    the launch leaves in host memory); notes when each launch came (``times``, cleared by
    the caller)."""

    function = packed_metadata = None

    def __init__(self, written):
        self.times = []
        self.run = _NoLaunch(self.times, written)

    def launch_metadata(self, *args):
        return None


@contextlib.contextmanager
def stubbed_launches():
    """The fastmtl ops on CPU tensors taken for eager CUDA calls, with every kernel launch
    a no-op (see the module doc): their direct-launch path runs, Triton never does."""
    from fastmtl.ops import common, fused, label_check, upsample

    def good_label_checks():  # what a launch writing the checks of good labels leaves
        for slot in label_check._taken.values():
            slot.host[0] = 0

    def through_triton(kernel, grid, args, kwargs):  # a call's first launches
        good_label_checks()
        return no_run

    no_run = _NoRun(good_label_checks)
    stubs = [(common, "eager_cuda", common.is_real),
             # the label check's CUDA path: a row of (here pageable) host memory per call
             (label_check, "_zero_copy", common.is_real),
             (label_check, "_pinned_rows", lambda n: torch.empty((n, label_check.ROW),
                                                                 dtype=torch.int64)),
             (common, "_through_triton", through_triton),
             (torch._C, "_cuda_getCurrentRawStream", lambda index: 0),
             (fused, "check_device", lambda t: None), (upsample, "check_device", lambda t: None)]
    saved = [(m, name, getattr(m, name, None)) for m, name, _ in stubs]
    for m, name, value in stubs:
        setattr(m, name, value)
    try:
        yield no_run
    finally:
        for m, name, value in saved:
            if value is None:
                delattr(m, name)
            else:
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


def warm_call(impl_name: str, problem: Problem, device: torch.device, warmup: int = 10):
    """One fwd+bwd call of an implementation on fresh inputs, as a function, after
    ``warmup`` calls of it."""
    impl = IMPLEMENTATIONS[impl_name]
    predictions, targets, log_vars = impl.inputs(problem, device)
    loss = impl.build(check_labels=False)
    call = lambda: step(loss, predictions, targets, log_vars, True)  # noqa: E731
    for _ in range(warmup):
        call()
    return call


def launch_times(call, stub: _NoRun, calls: int) -> list[float]:
    """Median seconds from the start of a stubbed call to each of its kernel launches, in
    order: where the host is behind, the device idles until the first, and a call timed
    with the L2 flushed before it takes about the time to its longest kernel's launch
    plus the kernels."""
    waits = []
    for _ in range(calls):
        stub.times.clear()
        start = time.perf_counter()
        call()
        waits.append([t - start for t in stub.times])
    return [statistics.median(w[i] for w in waits) for i in range(min(map(len, waits)))]


def profile(impl_name: str, problem: Problem, device: torch.device, calls: int, top: int,
            stub: _NoRun | None = None) -> str:
    impl = IMPLEMENTATIONS[impl_name]
    why = None if stub and impl_name in STUBBABLE else impl.unavailable(device)
    if why:
        return f"## {impl_name}: skipped ({why})\n"
    call = warm_call(impl_name, problem, device)
    wall = wall_per_call(call, device, calls)
    profiler = cProfile.Profile()
    profiler.runcall(_repeat, call, calls)
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs()
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    what = "wall, no profiler"
    if stub and impl_name not in STUBBABLE:
        what = f"wall on {device.type}, no fastmtl launch to stub"
    elif stub:
        times = launch_times(call, stub, calls)
        what = (f"Python side, launches stubbed; the first launch {times[0] * 1e6:.0f} us "
                f"after the call's start; every launch at "
                f"{', '.join(f'{t * 1e6:.0f}' for t in times)} us")
    return (f"## {impl_name}, {problem.shape}, C={problem.classes}, {problem.dtype}: "
            f"{wall * 1e6:.0f} us per fwd+bwd call ({what})\n\n{out.getvalue()}")


def api_rows(averages, calls: int) -> list[tuple[str, float, float]]:
    """(name, calls per loss call, host us per loss call) of the CUDA runtime and driver
    functions among ``torch.profiler``'s ``key_averages()``, most time first."""
    rows = [(a.key, a.count / calls, a.cpu_time_total / calls) for a in averages
            if a.key.startswith(("cuda", "cu")) and not a.key.startswith("cudnn")]
    return sorted(rows, key=lambda r: -r[2])


def api_report(call, calls: int, device: torch.device, top: int) -> str:
    """``calls`` calls of ``call`` under ``torch.profiler`` (CPU activity, and CUDA's on a
    CUDA device): the CUDA API table of ``api_rows`` and the operators by own host time."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda"
                                           else [])
    with torch_profile(activities=activities) as prof:
        _repeat(call, calls)
        torch.cuda.synchronize(device) if device.type == "cuda" else None
    averages = prof.key_averages()
    rows = api_rows(averages, calls)
    lines = ["| CUDA API function | per call | host us per call |", "| --- | --- | --- |"]
    lines += [f"| {name} | {n:.2f} | {us:.1f} |" for name, n, us in rows]
    lines += [f"| (all of them) | {sum(r[1] for r in rows):.2f} | {sum(r[2] for r in rows):.1f} |",
              "", "Operators by own host time (torch.profiler, all calls):", "",
              averages.table(sort_by="self_cpu_time_total", row_limit=top), ""]
    return "\n".join(lines)


def cuda_api(impl_name: str, problem: Problem, device: torch.device, calls: int,
             top: int) -> str:
    impl = IMPLEMENTATIONS[impl_name]
    why = impl.unavailable(device) or (None if device.type == "cuda" else "needs CUDA")
    if why:
        return f"## {impl_name}: skipped ({why})\n"
    call = warm_call(impl_name, problem, device)
    wall = wall_per_call(call, device, calls)
    return (f"## {impl_name}, {problem.shape}, C={problem.classes}, {problem.dtype}: "
            f"{wall * 1e6:.0f} us per fwd+bwd call (wall, no profiler)\n\n"
            + api_report(call, calls, device, top))


def bare(impl_name: str, problem: Problem, device: torch.device, calls: int) -> str:
    call = warm_call(impl_name, problem, device, warmup=30)
    functools.reduce(lambda acc, _: (call(), acc)[1], range(calls), 0)
    return f"## {impl_name}: {calls} calls inside functools.reduce"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.host_time", description=__doc__.splitlines()[0])
    p.add_argument("--size", nargs="+", default=["2x128x256"],
                   help="one size, or one per --classes value")
    p.add_argument("--classes", type=int, nargs="+", default=[19])
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--impls", nargs="+", default=["triton", "upsample-fused"], choices=list(IMPLEMENTATIONS))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--stub-launches", action="store_true",
                   help="CPU tensors, every fastmtl kernel launch a no-op: the Python side alone")
    p.add_argument("--cuda-api", action="store_true",
                   help="torch.profiler instead of cProfile: the host's time in CUDA API calls")
    p.add_argument("--bare", action="store_true",
                   help="the calls alone, inside functools.reduce: for Valgrind's counts")
    args = p.parse_args(argv)
    if args.cuda_api and args.stub_launches:
        p.error("--cuda-api times real launches: not with --stub-launches")
    if len(args.size) not in (1, len(args.classes)):
        p.error(f"--size: one size, or one per --classes value ({len(args.classes)})")
    problems = [Problem(label, b, h, w, classes, args.dtype)
                for size, classes in zip(args.size * len(args.classes), args.classes)
                for label, (b, h, w) in [parse_size(size)]]
    device = torch.device("cpu" if args.stub_launches else args.device)
    with stubbed_launches() if args.stub_launches else contextlib.nullcontext() as stub:
        for problem in problems:
            for name in args.impls:
                if args.bare:
                    print(bare(name, problem, device, args.calls), flush=True)
                elif args.cuda_api:
                    print(cuda_api(name, problem, device, args.calls, args.top), flush=True)
                else:
                    print(profile(name, problem, device, args.calls, args.top, stub), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
