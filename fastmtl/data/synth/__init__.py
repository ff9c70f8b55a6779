"""A synthetic city written in the Cityscapes layout and encodings.

Each scene is a street seen from a car's stereo camera (``scene.py``): a
pitched and rolled camera above a road that is flat and then climbs or
falls, sidewalks, sometimes terrain, facades of buildings, walls and
vegetation along both kerbs and across the far end, sky, the ego vehicle's
hood, and cars, trucks, buses, persons and trees standing on the ground at
random depths (``objects.py``). Depth comes from what each pixel sees
(nearer objects occlude farther ones), not from its row. Every class has its
own colour, texture and shape cues, and things are sized to stay several
head cells wide at the default size.

Files are exactly Cityscapes': 8-bit RGB leftImg8bit, 8-bit labelIds, 16-bit
instanceIds (classId * 1000 + k for instances, the labelId elsewhere; one far
car per few scenes is a crowd region, instanceId 26), 16-bit disparity
((p - 1) / 256 pixels) and camera json (with the scene's pitch and roll).
Scene i of a split depends only on (seed, split, i): the same seed gives
identical bytes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..io import write_camera, write_png
from .scene import BASELINE, CAMERA_HEIGHT, FX_2048, render_scene

__all__ = ["VERSION", "DEFAULT_SIZE", "CITIES", "render_scene", "generate", "ensure_synthetic_city", "default_root",
           "BASELINE", "CAMERA_HEIGHT", "FX_2048"]

VERSION = 2  # bump when the output changes, so cached trees are regenerated
DEFAULT_SIZE = (128, 256)
CITIES = {"train": ("aachen", "bochum", "bremen"), "val": ("frankfurt", "lindau", "munster"),
          "test": ("berlin", "bielefeld", "bonn")}


def _parse_splits(n, n_val, splits):
    if splits is not None:
        return {str(k): int(v) for k, v in splits.items()}
    return {"train": int(n), "val": int(max(1, n // 4) if n_val is None else n_val)}


def generate(
    out_dir: str | os.PathLike,
    n: int = 200,
    seed: int = 0,
    size: tuple[int, int] = DEFAULT_SIZE,
    n_val: int | None = None,
    splits: Mapping[str, int] | None = None,
) -> Path:
    """Write ``n`` train and ``n_val`` (default n // 4, at least 1) val scenes
    under ``out_dir`` in the Cityscapes layout; ``splits`` ({name: count})
    replaces both. Cities cycle through ``CITIES[split]`` (or city0, city1, ...).
    ``out_dir`` must be empty or absent, so no scene of an older tree survives.
    Returns the root."""
    root = Path(out_dir)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"output directory is not empty: {root}")
    h, w = (int(v) for v in size)
    if h < 16 or w < 16:
        raise ValueError(f"size must be at least 16x16, got {h}x{w}")
    for split, count in _parse_splits(n, n_val, splits).items():
        cities = CITIES.get(split, tuple(f"city{i}" for i in range(3)))
        split_key = zlib.crc32(split.encode())
        for i in range(count):
            city = cities[i % len(cities)]
            stem = f"{city}_{i // len(cities):06d}_000019"
            dirs = {d: root / d / split / city for d in ("leftImg8bit", "gtFine", "disparity", "camera")}
            for d in dirs.values():
                d.mkdir(parents=True, exist_ok=True)
            scene = render_scene(np.random.default_rng([seed, split_key, i]), (h, w))
            write_png(dirs["leftImg8bit"] / f"{stem}_leftImg8bit.png", scene["rgb"], "rgb8")
            write_png(dirs["gtFine"] / f"{stem}_gtFine_labelIds.png", scene["label_ids"], "gray8")
            write_png(dirs["gtFine"] / f"{stem}_gtFine_instanceIds.png", scene["instance_ids"], "gray16")
            write_png(dirs["disparity"] / f"{stem}_disparity.png", scene["disparity"], "gray16")
            write_camera(dirs["camera"] / f"{stem}_camera.json", **scene["camera"])
    return root


def default_root(n: int = 200, seed: int = 0, size: tuple[int, int] = DEFAULT_SIZE,
                 splits: Mapping[str, int] | None = None) -> Path:
    """Cache location: $FASTMTL_CACHE or ~/.cache/fastmtl, then synth-<seed>-<n>[-HxW]-v<VERSION>
    (with ``splits``, synth-<seed>-<split><count>-...[-HxW]-v<VERSION>)."""
    cache = Path(os.environ.get("FASTMTL_CACHE") or Path.home() / ".cache" / "fastmtl")
    suffix = "" if tuple(size) == DEFAULT_SIZE else f"-{size[0]}x{size[1]}"
    counts = str(n) if splits is None else "-".join(f"{k}{int(v)}" for k, v in splits.items())
    return cache / f"synth-{seed}-{counts}{suffix}-v{VERSION}"


_MARKER = "fastmtl-synth.json"


def ensure_synthetic_city(
    root: str | os.PathLike | None = None,
    n: int = 200,
    seed: int = 0,
    size: tuple[int, int] = DEFAULT_SIZE,
    n_val: int | None = None,
    splits: Mapping[str, int] | None = None,
) -> Path:
    """Return a generated tree, creating it on first use (``splits`` as in ``generate``).

    The tree is written to a temporary sibling directory and renamed into
    place when complete, so concurrent callers and interrupted runs never see
    a partial tree. An existing ``root`` must hold a tree generated with the
    same parameters (recorded in fastmtl-synth.json).
    """
    root = Path(root) if root is not None else default_root(n, seed, size, splits)
    params = {"version": VERSION, "seed": int(seed), "size": [int(size[0]), int(size[1])],
              "splits": _parse_splits(n, n_val, splits)}
    marker = root / _MARKER
    if root.exists():
        try:
            found = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise ValueError(f"{root} exists but is not a complete synthetic city (no valid {_MARKER}); remove it") from None
        if found != params:
            raise ValueError(f"{root} holds a synthetic city with {found}, not the requested {params}")
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        generate(tmp, seed=seed, size=size, splits=params["splits"])
        (tmp / _MARKER).write_text(json.dumps(params, indent=2) + "\n", encoding="utf-8")
        try:
            os.rename(tmp, root)
        except OSError:
            if not (root / _MARKER).is_file():  # not a concurrent winner: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
