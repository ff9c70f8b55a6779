"""Argument types shared by the commands: bad values fail in argparse with a one-line message."""
from __future__ import annotations

import argparse


def positive_int(text: str) -> int:
    """An int >= 1, for ``type=`` in argparse."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


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


def size_or_native(text: str):
    """``parse_size``, or the word 'native'."""
    return "native" if text == "native" else parse_size(text)
