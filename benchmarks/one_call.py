"""A few forward + backward calls of one implementation at one size, nothing timed: the
program to put under a profiler.

    python -m benchmarks.one_call upsample-fused --size full --set semantic_registers=128
    ncu --clock-control none --kernel-name regex:upsample_loss_kernel --launch-skip 1 \\
        --launch-count 1 --section WarpStateStats --section SchedulerStats --section Occupancy \\
        python -m benchmarks.one_call upsample-fused --size full --set semantic_registers=128

``--set NAME=VALUE`` (repeatable) changes a field of the upsample loss's configuration
(``fastmtl.ops.upsample_tiles.Config``) or one of the fused pass's layout switches
(``fastmtl.ops.fused_layout``: COMPACT_LABELS, RESIDENT_PAIRS, KEPT_PAIRS, SPLIT_PAIRS,
SPLIT_PLANES, ONE_TILE); VALUE
is a Python literal.
The first call compiles; name ``--launch-skip`` to profile a later one.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
from dataclasses import fields

import torch

from benchmarks.implementations import IMPLEMENTATIONS, step
from benchmarks.problem import Problem, parse_size

LAYOUT_SWITCHES = ("COMPACT_LABELS", "RESIDENT_PAIRS", "KEPT_PAIRS", "SPLIT_PAIRS",
                   "SPLIT_PLANES", "ONE_TILE")


def parse_sets(items: list[str]) -> tuple[dict, dict]:
    """``NAME=VALUE`` items -> (upsample Config changes, fused_layout switches)."""
    from fastmtl.ops.upsample_tiles import Config

    config_fields = {f.name for f in fields(Config)}
    config, layout = {}, {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected NAME=VALUE")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise ValueError(f"--set {item!r}: {text!r} is not a Python literal") from None
        if name in config_fields:
            config[name] = value
        elif name in LAYOUT_SWITCHES:
            layout[name] = bool(value)
        else:
            raise ValueError(f"--set {item!r}: {name!r} is neither a field of upsample_tiles.Config "
                             f"({', '.join(sorted(config_fields))}) nor one of {LAYOUT_SWITCHES}")
    return config, layout


@contextlib.contextmanager
def settings(config: dict, layout: dict):
    """The library with these changes inside the block, restored after."""
    from fastmtl.ops import fused_layout
    from fastmtl.ops.upsample_tiles import use

    saved = {name: getattr(fused_layout, name) for name in layout}
    try:
        for name, value in layout.items():
            setattr(fused_layout, name, value)
        with use(**config):
            yield
    finally:
        for name, value in saved.items():
            setattr(fused_layout, name, value)


def run(impl_name: str, problem: Problem, device: torch.device, calls: int,
        config: dict, layout: dict) -> None:
    impl = IMPLEMENTATIONS[impl_name]
    # On a CPU nothing is timed, so the fastmtl ops may run under the interpreter
    # (TRITON_INTERPRET=1), which the benchmarks refuse as too slow to time.
    why = impl.unavailable(device) if device.type == "cuda" else None
    if why:
        raise SystemExit(f"{impl_name}: {why}")
    predictions, targets, log_vars = impl.inputs(problem, device)
    loss = impl.build(check_labels=False)
    with settings(config, layout):
        for _ in range(calls):
            step(loss, predictions, targets, log_vars, True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.one_call",
                                description=__doc__.splitlines()[0])
    p.add_argument("impl", choices=list(IMPLEMENTATIONS))
    p.add_argument("--size", default="full", help="tiny, half, full or BxHxW (default full)")
    p.add_argument("--classes", type=int, default=19)
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--calls", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    args = p.parse_args(argv)
    try:
        config, layout = parse_sets(args.set)
    except ValueError as exc:
        p.error(str(exc))
    label, (b, h, w) = parse_size(args.size)
    problem = Problem(label, b, h, w, args.classes, args.dtype)
    run(args.impl, problem, torch.device(args.device), args.calls, config, layout)
    print(f"{args.calls} forward + backward calls of {args.impl}, {b}x{h}x{w}, C={args.classes}, "
          f"{args.dtype}" + (f", {', '.join(args.set)}" if args.set else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
