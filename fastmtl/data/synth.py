"""A synthetic city written in the Cityscapes layout and encodings.

Each scene is a straight street seen from a car: a camera at height h above a
ground plane, focal length f, horizon on row v0, stereo baseline B. A ground
pixel on row v > v0 lies at depth Z = f h / (v - v0), so its disparity is
f B / Z = B (v - v0) / h; facades are vertical planes along the street, and
cars, persons, riders with their bicycles, trees and poles are upright
billboards standing on the ground at a depth Z, drawn far to near with a depth
test, so nearer objects occlude farther ones. Sky and the ego-vehicle hood
have no disparity (0). Colours carry texture, shading, haze and noise, and
object colours are random, so classes are learnable but not colour-coded.

Files are exactly Cityscapes': 8-bit RGB leftImg8bit, 8-bit labelIds, 16-bit
instanceIds (classId * 1000 + k for instances, the labelId elsewhere; one far
car per few scenes is a crowd region, instanceId 26), 16-bit disparity
((p - 1) / 256 pixels) and camera json. Scene i of a split depends only on
(seed, split, i): the same seed gives identical bytes.
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
from cityscapesscripts.helpers.labels import name2label

from .io import write_camera, write_png
from .targets import encode_disparity

__all__ = ["VERSION", "DEFAULT_SIZE", "CITIES", "render_scene", "generate", "ensure_synthetic_city", "default_root"]

VERSION = 1  # bump when the output changes, so cached trees are regenerated
DEFAULT_SIZE = (128, 256)
CITIES = {"train": ("aachen", "bochum", "bremen"), "val": ("frankfurt", "lindau", "munster")}

_ID = {n: name2label[n].id for n in (
    "ego vehicle", "road", "sidewalk", "building", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "bicycle")}

# Cityscapes' stereo rig, focal length at 2048 pixels wide.
FX_2048 = 2262.52
BASELINE = 0.209313
CAMERA_HEIGHT = 1.22

_CAR_COLOURS = np.array([
    [225, 225, 222], [30, 30, 34], [165, 168, 172], [110, 112, 118], [150, 25, 28],
    [28, 50, 130], [30, 80, 50], [200, 170, 40], [120, 70, 40], [90, 120, 160],
], dtype=np.float32)
_FACADE_COLOURS = np.array([
    [190, 175, 150], [150, 150, 155], [160, 90, 70], [215, 210, 200], [120, 115, 110], [180, 160, 120],
], dtype=np.float32)


def _waves(rng, a, b, n=4, lo=0.2, hi=2.0):
    """Smooth texture in [-1, 1]: random plane waves over world coordinates (a, b) in metres."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    out = np.zeros(np.broadcast(a, b).shape, np.float32)
    for _ in range(n):
        fa, fb = (rng.uniform(lo, hi, 2) * rng.choice([-1, 1], 2) * 2 * np.pi).astype(np.float32)
        out += np.sin(fa * a + fb * b + np.float32(rng.uniform(0, 2 * np.pi)))
    return out / np.float32(n)


class _Canvas:
    """Depth-tested painting of labels, instance ids, colours and depth."""

    def __init__(self, h, w, haze):
        self.v, self.u = np.mgrid[0:h, 0:w].astype(np.float32)
        self.z = np.full((h, w), np.inf, np.float32)
        self.label = np.full((h, w), _ID["sky"], np.uint8)
        self.inst = np.full((h, w), _ID["sky"], np.uint16)
        self.rgb = np.zeros((h, w, 3), np.float32)
        self.haze = haze

    def paint(self, win, mask, z, label, inst, colour):
        """Paint ``mask`` pixels of window ``win`` that are nearer than what is there.

        ``colour`` is an RGB triple, an (h, w, 3) array over the window, or a
        function of the final boolean mask returning (n, 3) colours, so that
        textures are computed only for the pixels that end up visible.
        """
        z = np.broadcast_to(np.asarray(z, np.float32), mask.shape)
        zbuf = self.z[win]
        m = mask & (z < zbuf)
        if not m.any():
            return
        zbuf[m] = z[m]
        self.label[win][m] = label[m] if np.ndim(label) else label
        self.inst[win][m] = inst[m] if np.ndim(inst) else inst
        if callable(colour):
            colour = colour(m)
        else:
            colour = np.broadcast_to(np.asarray(colour, np.float32), (*mask.shape, 3))[m]
        a = (1.0 - np.exp(-z[m] / 350.0))[:, None]  # aerial perspective
        self.rgb[win][m] = colour * (1 - a) + self.haze * a


def _sky(rng, cv, v0, h, where):
    top = np.array([60, 110, 175]) + rng.uniform(-20, 20, 3)
    if rng.random() < 0.3:  # overcast
        top = np.full(3, rng.uniform(150, 200))
    u, v = cv.u[where], cv.v[where]
    t = np.clip((v0 - v) / max(v0, 1.0), 0, 1)[:, None]
    clouds = np.clip(_waves(rng, u / h * 8, v / h * 8, lo=0.05, hi=0.6), 0, 1)[:, None]
    cv.rgb[where] = (cv.haze * (1 - t) + top * t) * (1 - 0.5 * clouds) + 235 * 0.5 * clouds


def _ground(rng, cv, f, u0, v0, hc, street):
    xl, xr, terrain = street["xl"], street["xr"], street["terrain"]
    below = cv.v > v0 + 0.5
    z = np.where(below, f * hc / np.maximum(cv.v - v0, 0.5), np.inf).astype(np.float32)
    x = np.where(below, (cv.u - u0) * np.where(below, z, 0) / f, 0)
    label = np.where((x >= xl) & (x <= xr), _ID["road"], _ID["sidewalk"]).astype(np.uint8)
    if terrain:
        label[(x > xr) & (x < xr + terrain)] = _ID["terrain"]
        label[(x < xl) & (x > xl - terrain)] = _ID["terrain"]
    road = np.array([95, 92, 98]) + rng.uniform(-20, 20)
    walk = np.array([160, 150, 140]) + rng.uniform(-25, 25, 3)
    grass = np.array([90, 140, 60]) + rng.uniform(-20, 20, 3)
    lanes = np.arange(xl + 3.25, xr - 1.0, 3.25)

    def colour(m):
        xm, zm, lab = x[m], z[m], label[m]
        col = np.empty((xm.size, 3), np.float32)
        is_road, is_walk, is_grass = lab == _ID["road"], lab == _ID["sidewalk"], lab == _ID["terrain"]
        col[is_road] = road * (1 + 0.08 * _waves(rng, xm[is_road], zm[is_road]))[:, None]
        near_lane = np.min(np.abs(xm[:, None] - lanes), axis=1) if lanes.size else np.full(xm.shape, np.inf)
        marks = ((near_lane < 0.08) & (np.mod(zm, 9.0) < 4.5)) | (np.abs(xm - xl) < 0.1) | (np.abs(xm - xr) < 0.1)
        col[is_road & marks] = 225
        tiles = (np.floor(xm[is_walk] / 0.6) + np.floor(zm[is_walk] / 0.6)) % 2
        col[is_walk] = walk * (0.92 + 0.08 * tiles)[:, None]
        col[is_grass] = grass * (1 + 0.15 * _waves(rng, xm[is_grass], zm[is_grass], lo=1, hi=4))[:, None]
        return col

    cv.paint(np.s_[:, :], below & (x > street["left"]) & (x < street["right"]), z, label, label, colour)


def _facades(rng, cv, f, u0, v0, hc, street):
    """Two facade planes x = left and x = right along the street, and one across it at z_far."""
    veg_id = _ID["vegetation"]

    def segments(total, lo, hi):
        edges = np.cumsum(rng.uniform(lo, hi, int(total / lo) + 2))
        edges = edges[: np.searchsorted(edges, total) + 1]
        kind = np.where(rng.random(edges.size) < 0.75, _ID["building"], veg_id).astype(np.uint8)
        height = np.where(kind == veg_id, rng.uniform(3, 9, edges.size), rng.uniform(8, 28, edges.size))
        colour = _FACADE_COLOURS[rng.integers(0, len(_FACADE_COLOURS), edges.size)] + rng.uniform(-15, 15, (edges.size, 3))
        return edges, kind, height, colour

    def draw(mask, z, along, y, segs):
        """Facade pixels: ``along`` is the position along the plane, ``y`` the height, in metres."""
        edges, kind, height, colour = segs
        s = np.minimum(np.searchsorted(edges, along), edges.size - 1)
        visible = mask & (y >= 0) & (y <= height[s])
        veg = visible & (kind[s] == veg_id)
        if veg.any():  # hedges and tree rows have a bumpy top
            visible[veg] = y[veg] <= height[s[veg]] * (0.85 + 0.15 * _waves(rng, along[veg], 0, lo=0.2, hi=0.8))

        def colour_of(m):
            al, yy, ss = along[m], y[m], s[m]
            col = colour[ss] * (1 + 0.05 * _waves(rng, al, yy, lo=0.5, hi=3))[:, None]
            pa, py = np.mod(al, 3.0), np.mod(yy, 3.2)
            windows = (pa > 0.9) & (pa < 2.2) & (py > 1.1) & (py < 2.5) & (yy > 2.5)
            col[windows] = col[windows] * 0.35 + np.array([20, 30, 45])
            leaf = kind[ss] == veg_id
            col[leaf] = np.array([70, 105, 40]) * (1 + 0.3 * _waves(rng, al[leaf], yy[leaf], n=6, lo=1.5, hi=5))[:, None]
            return col

        cv.paint(np.s_[:, :], visible, z, kind[s], kind[s], colour_of)

    z_far = street["z_far"]
    cols = cv.u - u0
    for x_plane, on_side in ((street["left"], cols < -0.5), (street["right"], cols > 0.5)):
        z = np.where(on_side, f * x_plane / np.where(on_side, cols, 1.0), np.inf).astype(np.float32)
        z_on = np.where(on_side, z, 0)
        y = np.where(on_side, hc - (cv.v - v0) * z_on / f, -1)
        draw(on_side & (z < z_far), z, z_on, y, segments(z_far, 6, 25))
    x = cols * z_far / f
    y = hc - (cv.v - v0) * z_far / f
    draw(np.ones_like(x, bool), np.float32(z_far), x + 200.0, y, segments(400, 8, 25))


# Object shapes: masks and colours over billboard coordinates a (metres right
# of the object's centre) and b (metres above the ground).

def _car(rng, a, b, w, h):
    body = _CAR_COLOURS[rng.integers(len(_CAR_COLOURS))] + rng.uniform(-12, 12, 3)
    half = w / 2
    wheels = (b < 0.38) & (np.abs(a) > half - 0.45) & (np.abs(a) < half - 0.08)
    lower = (np.abs(a) <= half) & (b >= 0.25) & (b <= 0.62 * h)
    taper = half * (1 - 0.3 * (b - 0.62 * h) / (0.38 * h))
    cabin = (b > 0.62 * h) & (b <= h) & (np.abs(a) <= taper)
    glass = cabin & (np.abs(a) <= taper - 0.12) & (b < h - 0.08)
    lights = lower & (np.abs(a) > half - 0.3) & (b > 0.45 * h) & (b < 0.56 * h)
    col = np.broadcast_to(body, (*a.shape, 3)).copy()
    col *= (1 + 0.15 * (b / h - 0.5))[..., None]  # lit from above
    col[glass] = [35, 45, 60]
    col[lights] = [200, 30, 30]
    col[wheels & ~lower] = [20, 20, 20]
    return wheels | lower | cabin, col


def _person(rng, a, b, h, feet=0.0):
    """A standing person of height h; ``feet`` raises the legs' bottom (a rider's)."""
    skin = np.array([225, 180, 150]) * rng.uniform(0.45, 1.0)
    shirt = rng.uniform(20, 230, 3)
    pants = rng.uniform(20, 120, 3)
    head_c = h - 0.12
    head = (a / 0.1) ** 2 + ((b - head_c) / 0.125) ** 2 <= 1
    torso = (b >= 0.5 * h) & (b <= h - 0.22) & (np.abs(a) <= 0.23 - 0.06 * (h - 0.22 - b) / (0.28 * h))
    stride = rng.uniform(0, 0.12)
    legs = (b >= feet) & (b < 0.5 * h) & (np.abs(np.abs(a) - 0.1 - stride * (0.5 * h - b) / h) < 0.07)
    col = np.empty((*a.shape, 3), np.float32)
    col[...] = pants
    col[torso] = shirt
    col[head] = np.where(b[head, None] > head_c + 0.04, np.array([40, 30, 25]), skin)
    return head | torso | legs, col


def _bicycle(rng, a, b):
    frame = rng.uniform(30, 220, 3)
    r = np.minimum(np.hypot(a - 0.55, b - 0.35), np.hypot(a + 0.55, b - 0.35))
    wheels = r <= 0.35
    tube = (np.abs(a) <= 0.55) & (np.abs(b - 0.35 - 0.4 * (0.55 - np.abs(a)) / 0.55) < 0.05)
    col = np.where((r > 0.29)[..., None], np.array([20, 20, 20], np.float32), np.array([90, 90, 90], np.float32))
    col = np.where(tube[..., None], frame, col)
    return wheels | tube, col


def _tree(rng, a, b, trunk, r):
    stem = (np.abs(a) < 0.15) & (b < trunk + r * 0.5)
    edge = r * (1 + 0.15 * _waves(rng, np.arctan2(b - trunk - r, a) * 3, 0 * a, lo=0.5, hi=2))
    crown = np.hypot(a, b - trunk - r) <= edge
    leaves = np.array([60, 100, 35]) * (1 + 0.35 * _waves(rng, a, b, n=6, lo=1.5, hi=5))[..., None]
    return stem | crown, np.where(crown[..., None], leaves, np.array([80, 60, 45], np.float32))


def _objects(rng, street):
    """(z, x, width, height, kind, params) of every object in the street."""
    xl, xr, left, right = street["xl"], street["xr"], street["left"], street["right"]
    lanes = np.arange(xl + 1.6, xr - 1.2, 3.25)
    out = []
    for _ in range(rng.integers(1, 8)):
        w, h = (rng.uniform(1.6, 2.0), rng.uniform(1.4, 1.7)) if rng.random() < 0.85 else (2.1, rng.uniform(1.9, 2.3))
        if rng.random() < 0.25:  # parked at the kerb
            x = (xl + w / 2 + 0.2) if rng.random() < 0.5 else (xr - w / 2 - 0.2)
        else:
            x = rng.choice(lanes) + rng.uniform(-0.4, 0.4) if lanes.size else 0.0
        out.append((rng.uniform(6, 70), x, w, h, "car"))
    for _ in range(rng.integers(0, 6)):
        x = rng.uniform(left + 0.5, xl - 0.4) if rng.random() < 0.5 else rng.uniform(xr + 0.4, right - 0.5)
        if rng.random() < 0.15:
            x = rng.uniform(xl, xr)  # crossing
        out.append((rng.uniform(5, 45), x, 0.6, rng.uniform(1.5, 1.9), "person"))
    for _ in range(rng.integers(0, 3)):
        x = (xl + 0.9) if rng.random() < 0.5 else (xr - 0.9)
        out.append((rng.uniform(7, 40), x, 1.8, 1.75, "rider"))
    for _ in range(rng.integers(0, 4)):
        x = (xl - 0.8) if rng.random() < 0.5 else (xr + 0.8)
        r = rng.uniform(1.2, 2.8)
        out.append((rng.uniform(8, 60), x, 2 * r * 1.2, rng.uniform(2, 4) + 2 * r * 1.15, ("tree", r)))
    for _ in range(rng.integers(0, 3)):
        x = (xl - 0.5) if rng.random() < 0.5 else (xr + 0.5)
        out.append((rng.uniform(6, 50), x, 0.7, rng.uniform(3.5, 6), "pole"))
    return sorted(out, key=lambda o: -o[0])  # far to near


def _draw_objects(rng, cv, f, u0, v0, hc, street):
    h, w = cv.z.shape
    counts = {}
    crowd_done = rng.random() >= 0.3  # about one scene in three has a crowd region
    for z, x, width, height, kind in _objects(rng, street):
        s = f / z  # pixels per metre at this depth
        uc, vb = u0 + x * s, v0 + hc * s
        x0, x1 = max(int(np.floor(uc - width / 2 * s)), 0), min(int(np.ceil(uc + width / 2 * s)) + 1, w)
        y0, y1 = max(int(np.floor(vb - height * s)), 0), min(int(np.ceil(vb)) + 1, h)
        if x1 <= x0 or y1 <= y0:
            continue
        win = np.s_[y0:y1, x0:x1]
        a, b = (cv.u[win] - uc) / s, (vb - cv.v[win]) / s
        if kind == "car":
            mask, col = _car(rng, a, b, width, height)
            parts = [("car", mask, col, z)]
        elif kind == "person":
            mask, col = _person(rng, a, b, height)
            parts = [("person", mask, col, z)]
        elif kind == "rider":
            bmask, bcol = _bicycle(rng, a, b)
            pmask, pcol = _person(rng, a, b - 0.05, height, feet=0.25)
            parts = [("bicycle", bmask, bcol, z), ("rider", pmask, pcol, z - 0.05)]
        elif kind == "pole":
            pole = (np.abs(a) < 0.07) & (b < height)
            sign = (np.abs(a) < 0.3) & (np.abs(b - height + 0.35) < 0.3)
            is_light = rng.random() < 0.4
            col = np.where(sign[..., None], rng.uniform(30, 230, 3) if not is_light else np.array([30, 30, 30.0]), np.array([120, 120, 125.0]))
            parts = [("pole", pole & ~sign, col, z), ("traffic light" if is_light else "traffic sign", sign, col, z)]
        else:
            mask, col = _tree(rng, a, b, height - 2 * kind[1] * 1.15, kind[1])
            parts = [("vegetation", mask, col, z)]
        for name, mask, col, zz in parts:
            label = _ID[name]
            if name in ("car", "person", "rider", "bicycle"):
                if name == "car" and z > 30 and not crowd_done:
                    inst, crowd_done = label, True  # a crowd region: class without an instance
                else:
                    inst = label * 1000 + counts.get(name, 0)
                    counts[name] = counts.get(name, 0) + 1
            else:
                inst = label
            cv.paint(win, mask, zz, label, inst, col)


def render_scene(rng: np.random.Generator, size: tuple[int, int] = DEFAULT_SIZE) -> dict:
    """One scene: "rgb" uint8 (H, W, 3), "label_ids" uint8, "instance_ids" uint16,
    "disparity" uint16 (Cityscapes PNG encoding), "camera" dict (baseline, fx, fy, u0, v0, height)."""
    h, w = size
    f = FX_2048 * w / 2048 * rng.uniform(0.97, 1.03)
    u0 = w / 2 + rng.uniform(-0.02, 0.02) * w
    v0 = h * rng.uniform(0.44, 0.52)
    hc = CAMERA_HEIGHT * rng.uniform(0.92, 1.08)
    baseline = BASELINE * rng.uniform(0.995, 1.005)
    xl, xr = -rng.uniform(3.0, 8.0), rng.uniform(3.0, 8.0)
    street = {
        "xl": xl, "xr": xr,
        "left": xl - rng.uniform(2.0, 5.0), "right": xr + rng.uniform(2.0, 5.0),
        "terrain": rng.uniform(0.6, 1.2) if rng.random() < 0.3 else 0.0,
        "z_far": rng.uniform(60, 160),
    }
    haze = np.array([200, 205, 212], np.float32) + rng.uniform(-15, 15)
    cv = _Canvas(h, w, haze)
    _ground(rng, cv, f, u0, v0, hc, street)
    _facades(rng, cv, f, u0, v0, hc, street)
    _draw_objects(rng, cv, f, u0, v0, hc, street)

    # Ego-vehicle hood across the bottom rows: ignored in training, no disparity.
    depth_hood = h * rng.uniform(0.04, 0.09)
    hood = cv.v > h - 1 - depth_hood * (1 - 0.6 * ((cv.u - u0) / (w / 2)) ** 2)
    cv.label[hood], cv.inst[hood], cv.z[hood] = _ID["ego vehicle"], _ID["ego vehicle"], np.inf
    cv.rgb[hood] = np.array([40, 42, 48]) + 30 * np.clip(_waves(rng, cv.u[hood] / w * 20, cv.v[hood] / w * 20), 0, 1)[:, None]
    _sky(rng, cv, v0, h, np.isinf(cv.z) & ~hood)

    light = rng.uniform(0.8, 1.15)
    rgb = cv.rgb * light + rng.normal(0, 4.0, cv.rgb.shape)
    disparity = np.where(np.isfinite(cv.z), f * baseline / cv.z, 0.0)
    camera = dict(baseline=baseline, fx=f, fy=f, u0=u0, v0=v0, height=hc)
    return {
        "rgb": np.clip(rgb + 0.5, 0, 255).astype(np.uint8),
        "label_ids": cv.label,
        "instance_ids": cv.inst,
        "disparity": encode_disparity(disparity),
        "camera": camera,
    }


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


def default_root(n: int = 200, seed: int = 0, size: tuple[int, int] = DEFAULT_SIZE) -> Path:
    """Cache location: $FASTMTL_CACHE or ~/.cache/fastmtl, then synth-<seed>-<n>[-HxW]-v<VERSION>."""
    cache = Path(os.environ.get("FASTMTL_CACHE") or Path.home() / ".cache" / "fastmtl")
    suffix = "" if tuple(size) == DEFAULT_SIZE else f"-{size[0]}x{size[1]}"
    return cache / f"synth-{seed}-{n}{suffix}-v{VERSION}"


_MARKER = "fastmtl-synth.json"


def ensure_synthetic_city(
    root: str | os.PathLike | None = None,
    n: int = 200,
    seed: int = 0,
    size: tuple[int, int] = DEFAULT_SIZE,
    n_val: int | None = None,
) -> Path:
    """Return a generated tree, creating it on first use.

    The tree is written to a temporary sibling directory and renamed into
    place when complete, so concurrent callers and interrupted runs never see
    a partial tree. An existing ``root`` must hold a tree generated with the
    same parameters (recorded in fastmtl-synth.json).
    """
    root = Path(root) if root is not None else default_root(n, seed, size)
    params = {"version": VERSION, "seed": int(seed), "size": [int(size[0]), int(size[1])], "splits": _parse_splits(n, n_val, None)}
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
