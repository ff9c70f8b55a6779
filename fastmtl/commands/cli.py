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

A mistake (a bad option, a missing file, a refused resume, a diverged run) ends
with one line, ``fastmtl COMMAND: error: ...``, and exit status 1 (130 on
Ctrl-C); ``fastmtl --debug COMMAND ...`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from fastmtl.commands.options import parse_size, positive_int

__all__ = ["command", "build_parser", "main", "parse_size", "positive_int"]

_COMMANDS: list[Callable] = []


def command(register: Callable) -> Callable:
    """Register ``register(subparsers)``, which adds one subcommand."""
    _COMMANDS.append(register)
    return register


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fastmtl",
        description="Multi-task dense scene understanding: semantics, instances and depth.",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in _COMMANDS:
        register(sub)
    _accept_debug_anywhere(sub)
    return parser


def _accept_debug_anywhere(subparsers) -> None:
    """``--debug`` after a command name works too (``fastmtl train ... --debug``)."""
    for p in set(subparsers.choices.values()):
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        for action in p._subparsers._group_actions if p._subparsers else ():
            _accept_debug_anywhere(action)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"fastmtl {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one line per mistake; --debug for the traceback
        if args.debug:
            raise
        print(f"fastmtl {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 1


# Errors whose message says it all; anything else also names its type.
_PLAIN = (OSError, ValueError, TypeError, RuntimeError)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, OSError) and e.filename and str(e.filename) not in text:
        text = f"{text}: {e.filename}"
    if not isinstance(e, _PLAIN) or type(e) is RuntimeError:
        text = f"{type(e).__name__}: {text} (rerun with fastmtl --debug for the traceback)"
    return text


# -- fastmtl data ------------------------------------------------------------

@command
def _data(subparsers):
    p = subparsers.add_parser("data", help="data sets: generate the synthetic city, check a Cityscapes tree")
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    s = sub.add_parser("synth", help="write a synthetic city in the Cityscapes layout")
    s.add_argument("--out", help="output directory (default: the cache, ~/.cache/fastmtl/synth-<seed>-<n>...)")
    s.add_argument("--n", type=positive_int, default=200, help="train scenes (default 200)")
    s.add_argument("--n-val", type=positive_int, default=None, help="val scenes (default n // 4, at least 1)")
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
