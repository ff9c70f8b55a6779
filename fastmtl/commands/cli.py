"""The ``fastmtl`` command line (also ``python -m fastmtl``).

Each subcommand is added by a function decorated with :func:`command`; it
receives argparse's subparsers object, adds its parser and sets ``func`` (the
handler, called with the parsed arguments, returning an exit status or None)
with ``set_defaults``. Handlers import what they need themselves, so building
the parser stays cheap::

    @command
    def _train(subparsers):
        p = subparsers.add_parser("train", help="train a model")
        p.add_argument("--steps", type=int, default=1000)
        p.set_defaults(func=_run_train)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

__all__ = ["command", "build_parser", "main", "parse_size"]

_COMMANDS: list[Callable] = []


def command(register: Callable) -> Callable:
    """Register ``register(subparsers)``, which adds one subcommand."""
    _COMMANDS.append(register)
    return register


def parse_size(text: str) -> tuple[int, int]:
    """'HxW' or a preset name (tiny, half, full) -> (H, W), for ``type=`` in argparse."""
    from fastmtl.data.cityscapes import resolve_size

    try:
        size = resolve_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if size is None or min(size) <= 0:
        raise argparse.ArgumentTypeError(f"expected HxW or tiny/half/full, got {text!r}")
    return size


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastmtl",
        description="Multi-task dense scene understanding: semantics, instances and depth.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in _COMMANDS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (OSError, ValueError) as e:  # bad paths and bad data: the message names the file
        print(f"fastmtl {args.command}: error: {e}", file=sys.stderr)
        return 1


# -- fastmtl data ------------------------------------------------------------

@command
def _data(subparsers):
    p = subparsers.add_parser("data", help="data sets: generate the synthetic city, check a Cityscapes tree")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    s = sub.add_parser("synth", help="write a synthetic city in the Cityscapes layout")
    s.add_argument("--out", help="output directory (default: the cache, ~/.cache/fastmtl/synth-<seed>-<n>...)")
    s.add_argument("--n", type=int, default=200, help="train scenes (default 200)")
    s.add_argument("--n-val", type=int, default=None, help="val scenes (default n // 4, at least 1)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=parse_size, default=(128, 256), help="HxW or tiny/half/full (default 128x256)")
    s.set_defaults(func=_data_synth)

    c = sub.add_parser("check", help="decode every sample of a Cityscapes-layout tree; fail on the first bad file")
    c.add_argument("root")
    c.add_argument("--split", default="train")
    c.add_argument("--size", default=None, type=parse_size, help="HxW or tiny/half/full (default: native)")
    c.set_defaults(func=_data_check)


def _data_synth(args) -> int:
    from fastmtl.data import synth

    if args.out is None:
        root = synth.ensure_synthetic_city(n=args.n, seed=args.seed, size=args.size, n_val=args.n_val)
    else:
        root = synth.generate(args.out, n=args.n, seed=args.seed, size=args.size, n_val=args.n_val)
    n_val = max(1, args.n // 4) if args.n_val is None else args.n_val
    print(f"synthetic city: {args.n} train + {n_val} val scenes, {args.size[0]}x{args.size[1]}, seed {args.seed}: {root}")
    return 0


def _data_check(args) -> int:
    from fastmtl.data import Cityscapes

    ds = Cityscapes(args.root, args.split, size=args.size)
    pixels = instances = valid_depth = 0
    for i in range(len(ds)):
        s = ds[i]
        pixels += s["semantic"].numel()
        instances += int((s["instance_mask"]).sum())
        valid_depth += int((s["depth"] > 0).sum())
    print(f"{ds}: all {len(ds)} samples decoded; instance pixels {instances / pixels:.1%}, "
          f"valid depth {valid_depth / pixels:.1%}")
    return 0


# -- fastmtl train / eval / predict / experiment / demo ----------------------
# Their parsers are defined next to their code.

@command
def _train(subparsers):
    from .train import register

    register(subparsers)


@command
def _eval(subparsers):
    from .eval import register

    register(subparsers)


@command
def _predict(subparsers):
    from .predict import register

    register(subparsers)


@command
def _experiment(subparsers):
    from .experiments import register

    register(subparsers)


@command
def _demo(subparsers):
    from .demo import register

    register(subparsers)
