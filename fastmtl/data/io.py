"""Reading and writing Cityscapes files with their exact encodings checked.

Every error names the file. PNG bit depth and colour type come from the IHDR
header itself, not from Pillow's mode, whose mapping of 16-bit greyscale has
changed across Pillow versions.
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np
from PIL import Image

__all__ = ["PNG_KINDS", "png_header", "read_png", "write_png", "read_camera", "write_camera"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# kind -> (bit depth, PNG colour type, what Cityscapes stores this way)
PNG_KINDS = {
    "rgb8": (8, 2, "8-bit RGB (leftImg8bit)"),
    "gray8": (8, 0, "8-bit greyscale (labelIds)"),
    "gray16": (16, 0, "16-bit greyscale (instanceIds, disparity)"),
}


def png_header(path: str | os.PathLike) -> tuple[int, int, int, int]:
    """(width, height, bit depth, colour type) from a PNG's IHDR chunk."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(29)
    except FileNotFoundError:
        raise FileNotFoundError(f"file not found: {path}") from None
    if len(head) < 29 or head[:8] != _SIGNATURE or head[12:16] != b"IHDR":
        raise ValueError(f"not a PNG file (bad signature or header): {path}")
    width, height, depth, color = struct.unpack(">IIBB", head[16:26])
    return width, height, depth, color


def read_png(path: str | os.PathLike, kind: str) -> np.ndarray:
    """Decode a PNG that must be encoded as ``kind`` (see ``PNG_KINDS``).

    Returns uint8 (H, W, 3) for "rgb8", uint8 (H, W) for "gray8" and uint16
    (H, W) for "gray16". Raises FileNotFoundError or ValueError naming the path.
    """
    path = os.fspath(path)
    depth, color, what = PNG_KINDS[kind]
    width, height, got_depth, got_color = png_header(path)
    if (got_depth, got_color) != (depth, color):
        raise ValueError(
            f"{path}: expected {what} PNG, got bit depth {got_depth}, colour type {got_color}"
        )
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.array(im)
    except Exception as e:  # truncated or corrupt data: Pillow raises OSError, SyntaxError, zlib errors
        raise ValueError(f"{path}: cannot decode PNG ({type(e).__name__}: {e})") from e
    expected = (height, width, 3) if kind == "rgb8" else (height, width)
    if arr.shape != expected:
        raise ValueError(f"{path}: decoded shape {arr.shape}, header says {expected}")
    return arr.astype(np.uint16 if depth == 16 else np.uint8, copy=False)


def write_png(path: str | os.PathLike, arr: np.ndarray, kind: str) -> None:
    """Encode ``arr`` as ``kind``: uint8 (H, W, 3), uint8 (H, W) or uint16 (H, W)."""
    depth, _, what = PNG_KINDS[kind]
    dtype = np.uint16 if depth == 16 else np.uint8
    if arr.dtype != dtype or arr.ndim != (3 if kind == "rgb8" else 2):
        raise ValueError(f"{what} needs a {dtype.__name__} array, got {arr.dtype} {arr.shape}")
    Image.fromarray(np.ascontiguousarray(arr)).save(path, format="PNG")


def read_camera(path: str | os.PathLike) -> dict[str, float]:
    """fx, fy, u0, v0 (pixels) and baseline (metres) from a Cityscapes camera json."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            cam = json.load(f)
        cam = {
            "fx": float(cam["intrinsic"]["fx"]),
            "fy": float(cam["intrinsic"]["fy"]),
            "u0": float(cam["intrinsic"]["u0"]),
            "v0": float(cam["intrinsic"]["v0"]),
            "baseline": float(cam["extrinsic"]["baseline"]),
        }
    except FileNotFoundError:
        raise FileNotFoundError(f"file not found: {path}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a Cityscapes camera json ({type(e).__name__}: {e})") from e
    return cam


def write_camera(path: str | os.PathLike, *, baseline, fx, fy, u0, v0, height=1.22, pitch=0.0, roll=0.0) -> None:
    """Write a camera json with Cityscapes' schema (extrinsic in metres and radians)."""
    f = float
    cam = {
        "extrinsic": {"baseline": f(baseline), "pitch": f(pitch), "roll": f(roll), "x": 1.7, "y": 0.0, "yaw": 0.0, "z": f(height)},
        "intrinsic": {"fx": f(fx), "fy": f(fy), "u0": f(u0), "v0": f(v0)},
    }
    with open(path, "w", encoding="utf-8") as out:
        json.dump(cam, out, indent=4)
        out.write("\n")
