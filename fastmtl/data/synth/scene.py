"""One street scene, ray cast from a stereo camera on a car.

World coordinates in metres: x right, y up, z forward; the camera sits at
the origin, ``height`` above the flat part of the ground, pitched and rolled.
The ground is flat up to ``z_hill`` and then rises or falls with slope
``grade``. Every pixel's ray is intersected with the ground, the facades
(vertical planes along both kerbs and one across the far end of the street)
and the objects (upright billboards standing on the ground); the nearest hit
wins, so nearer objects occlude farther ones. Disparity is ``f B / Z`` with Z
the hit's depth along the optical axis; sky and the ego vehicle's hood have
none (0). Depth therefore depends on what the pixel sees, not on its row:
the horizon moves with pitch, tilts with roll, bends at the hill.
"""
from __future__ import annotations

import numpy as np

from ..targets import encode_disparity
from .objects import draw_objects
from .paint import ID, Canvas, waves

# Cityscapes' stereo rig, focal length at 2048 pixels wide.
FX_2048 = 2262.52
BASELINE = 0.209313
CAMERA_HEIGHT = 1.22

_FACADE_COLOURS = np.array([
    [190, 175, 150], [150, 150, 155], [165, 95, 75], [215, 210, 200], [125, 120, 112], [185, 160, 120],
], dtype=np.float32)


class Camera:
    """Pinhole camera: rays of every pixel and the projection of world points."""

    def __init__(self, h, w, f, u0, v0, height, pitch, roll):
        self.h, self.w, self.f, self.u0, self.v0 = h, w, f, u0, v0
        self.height, self.pitch, self.roll = height, pitch, roll
        cp, sp, cr, sr = np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
        roll_m = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
        pitch_m = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
        self.rotation = (pitch_m @ roll_m).astype(np.float32)  # camera frame (y up) -> world
        v, u = np.mgrid[0:h, 0:w].astype(np.float32)
        cam = np.stack([(u - u0) / f, -(v - v0) / f, np.ones_like(u)], -1)
        # A world point t * ray has depth t along the optical axis (the camera frame's z is 1).
        self.ray = cam @ self.rotation.T

    def project(self, points):
        """(n, 3) world points -> (n, 2) pixel (u, v); NaN behind the camera."""
        cam = np.asarray(points, np.float32) @ self.rotation
        z = np.where(cam[:, 2] > 1e-3, cam[:, 2], np.nan)
        return np.stack([self.u0 + self.f * cam[:, 0] / z, self.v0 - self.f * cam[:, 1] / z], -1)


def ground_height(street, z):
    """y of the ground at depth z: flat, then a hill of slope ``grade`` from ``z_hill`` on."""
    return -street["height"] + street["grade"] * np.maximum(np.asarray(z, np.float32) - street["z_hill"], 0)


def _ground_hit(cam, street):
    """Depth t of every ray's hit on the ground (inf where it misses)."""
    dx, dy, dz = cam.ray[..., 0], cam.ray[..., 1], cam.ray[..., 2]
    hc, g, z0 = street["height"], street["grade"], street["z_hill"]
    with np.errstate(divide="ignore", invalid="ignore"):
        flat = np.where(dy < 0, -hc / dy, np.inf)
        flat = np.where(flat * dz <= z0, flat, np.inf)
        hill = (-hc - g * z0) / (dy - g * dz)
        hill = np.where((hill > 0) & (hill * dz > z0), hill, np.inf)
    t = np.minimum(flat, hill)
    x, z = t * dx, t * dz
    inside = np.isfinite(t) & (x > street["left"]) & (x < street["right"]) & (z < street["z_far"] + 1)
    return np.where(inside, t, np.inf).astype(np.float32)


def _ground(rng, cv, cam, street):
    t = _ground_hit(cam, street)
    hit = np.isfinite(t)
    x, z = np.where(hit, t * cam.ray[..., 0], 0), np.where(hit, t * cam.ray[..., 2], 0)
    xl, xr, terrain = street["xl"], street["xr"], street["terrain"]
    label = np.where((x >= xl) & (x <= xr), ID["road"], ID["sidewalk"]).astype(np.uint8)
    if terrain:
        label[((x > xr) & (x < xr + terrain)) | ((x < xl) & (x > xl - terrain))] = ID["terrain"]
    road = np.array([88, 86, 92]) * rng.uniform(0.85, 1.15)
    walk = np.array([175, 160, 140]) + rng.uniform(-20, 20, 3)
    grass = np.array([95, 145, 55]) + rng.uniform(-15, 15, 3)
    lanes = np.arange(xl + 3.25, xr - 1.0, 3.25)

    def colour(m):
        xm, zm, lab = x[m], z[m], label[m]
        col = np.empty((xm.size, 3), np.float32)
        is_road, is_walk, is_grass = lab == ID["road"], lab == ID["sidewalk"], lab == ID["terrain"]
        col[is_road] = road * (1 + 0.06 * waves(rng, xm[is_road] * 3, zm[is_road] * 3))[:, None]
        near_lane = np.min(np.abs(xm[:, None] - lanes), axis=1) if lanes.size else np.full(xm.shape, np.inf)
        marks = ((near_lane < 0.12) & (np.mod(zm, 9.0) < 4.5)) | (np.abs(xm - xl) < 0.15) | (np.abs(xm - xr) < 0.15)
        col[is_road & marks] = 230
        tiles = (np.floor(xm[is_walk] / 0.5) + np.floor(zm[is_walk] / 0.5)) % 2
        col[is_walk] = walk * (0.85 + 0.15 * tiles)[:, None]
        col[is_grass] = grass * (1 + 0.25 * waves(rng, xm[is_grass], zm[is_grass], n=6, lo=2, hi=6))[:, None]
        return col

    cv.paint(np.s_[:, :], hit, t, label, label, colour)


def _segments(rng, total, lo, hi, vegetation=0.25, min_height=3.0):
    """Facade segments along a plane: end positions, class, height and colour of each."""
    edges = np.cumsum(rng.uniform(lo, hi, int(total / lo) + 2))
    edges = edges[: np.searchsorted(edges, total) + 1]
    kind = np.where(rng.random(edges.size) < vegetation, ID["vegetation"], ID["building"]).astype(np.uint8)
    height = np.where(kind == ID["vegetation"], rng.uniform(min_height, min_height + 5, edges.size),
                      rng.uniform(max(min_height, 7), 25, edges.size))
    colour = _FACADE_COLOURS[rng.integers(0, len(_FACADE_COLOURS), edges.size)] + rng.uniform(-12, 12, (edges.size, 3))
    return edges, kind, height, colour


def _facade(rng, cv, t, along, base, y, segs, wall=None):
    """Paint a facade plane hit at depth t; ``along`` is the position along it, ``y`` the
    height and ``base`` the ground height under the hit, in metres."""
    edges, kind, height, colour = segs
    s = np.minimum(np.searchsorted(edges, along), edges.size - 1)
    up = y - base
    visible = np.isfinite(t) & (up >= 0) & (up <= height[s])
    veg = visible & (kind[s] == ID["vegetation"])
    if veg.any():  # hedges and tree rows have a bumpy top
        visible[veg] = up[veg] <= height[s[veg]] * (0.85 + 0.15 * waves(rng, along[veg], 0, lo=0.2, hi=0.8))
    label = kind[s].copy()
    if wall is not None:  # a low wall along the kerb side of some segments
        has_wall, wall_height = wall
        label[has_wall[s] & (up <= wall_height[s])] = ID["wall"]

    def colour_of(m):
        al, yy, ss, lab = along[m], up[m], s[m], label[m]
        col = colour[ss] * (1 + 0.05 * waves(rng, al, yy, lo=0.5, hi=3))[:, None]
        pa, py = np.mod(al, 3.0), np.mod(yy, 3.2)
        windows = (pa > 0.8) & (pa < 2.2) & (py > 1.0) & (py < 2.5) & (yy > 2.5)
        col[windows] = col[windows] * 0.3 + np.array([25, 35, 55])
        leaf = lab == ID["vegetation"]
        col[leaf] = np.array([55, 95, 35]) * (1 + 0.35 * waves(rng, al[leaf] * 2, yy[leaf] * 2, n=6, lo=1.5, hi=5))[:, None]
        stone = lab == ID["wall"]
        blocks = ((np.floor(al[stone] / 0.8) + np.floor(yy[stone] / 0.4)) % 2)[:, None]
        col[stone] = np.array([140, 138, 130]) * (0.9 + 0.1 * blocks)
        return col

    cv.paint(np.s_[:, :], visible, np.where(visible, t, np.inf), label, label, colour_of)


def _facades(rng, cv, cam, street):
    """Facade planes x = left and x = right along the street, and one across it at z_far."""
    dx, dy, dz = cam.ray[..., 0], cam.ray[..., 1], cam.ray[..., 2]
    z_far = street["z_far"]
    with np.errstate(divide="ignore", invalid="ignore"):
        for x_plane in (street["left"], street["right"]):
            t = np.where(dx * x_plane > 0, x_plane / dx, np.inf)
            t = np.where(t * dz < z_far, t, np.inf).astype(np.float32)
            along = np.where(np.isfinite(t), t * dz, 0)
            segs = _segments(rng, z_far, 6, 22)
            wall = (rng.random(segs[0].size) < 0.35, rng.uniform(0.8, 1.6, segs[0].size))
            _facade(rng, cv, t, along, ground_height(street, along), np.where(np.isfinite(t), t * dy, -1e9),
                    segs, wall)
        t = np.where(dz > 0, z_far / dz, np.inf).astype(np.float32)
        _facade(rng, cv, t, np.where(np.isfinite(t), t * dx, 0) + 200.0, ground_height(street, z_far),
                np.where(np.isfinite(t), t * dy, -1e9), _segments(rng, 400, 8, 25, vegetation=0.15, min_height=10))


def _sky(rng, cv, cam, where):
    top = np.array([55, 105, 185]) + rng.uniform(-20, 20, 3)
    if rng.random() < 0.25:  # overcast
        top = np.array([170, 180, 195]) + rng.uniform(-15, 15)
    elevation = np.clip(cam.ray[..., 1][where] / np.linalg.norm(cam.ray[where], axis=-1), 0, 1)
    t = np.clip(elevation * 4, 0, 1)[:, None]
    clouds = np.clip(waves(rng, cam.ray[..., 0][where] * 6, cam.ray[..., 1][where] * 6, lo=0.3, hi=1.5), 0, 1)[:, None]
    cv.rgb[where] = (cv.haze * (1 - t) + top * t) * (1 - 0.4 * clouds) + 240 * 0.4 * clouds


def _hood(rng, cv, cam):
    """The ego vehicle's hood across the bottom rows: ignored in training, no disparity."""
    h, w = cv.z.shape
    depth = h * rng.uniform(0.04, 0.08)
    hood = cv.v > h - 1 - depth * (1 - 0.6 * ((cv.u - cam.u0) / (w / 2)) ** 2)
    cv.label[hood], cv.inst[hood], cv.z[hood] = ID["ego vehicle"], ID["ego vehicle"], np.inf
    cv.rgb[hood] = np.array([40, 42, 48]) + 30 * np.clip(waves(rng, cv.u[hood] / w * 20, cv.v[hood] / w * 20), 0, 1)[:, None]
    return hood


def sample_street(rng, h, w):
    """The random parameters of one scene: camera and street layout."""
    f = FX_2048 * w / 2048 * rng.uniform(0.97, 1.03)
    cam = Camera(h, w, f, u0=w / 2 + rng.uniform(-0.02, 0.02) * w, v0=h * rng.uniform(0.45, 0.5),
                 height=CAMERA_HEIGHT * rng.uniform(0.9, 1.15), pitch=np.radians(rng.uniform(-4.5, 4.5)),
                 roll=np.radians(rng.uniform(-4, 4)))
    xl, xr = -rng.uniform(3.0, 7.5), rng.uniform(3.0, 7.5)
    street = {
        "xl": xl, "xr": xr, "height": cam.height,
        "left": xl - rng.uniform(2.5, 5.0), "right": xr + rng.uniform(2.5, 5.0),
        "terrain": rng.uniform(1.5, 3.0) if rng.random() < 0.4 else 0.0,
        "z_far": rng.uniform(45, 120), "z_hill": rng.uniform(12, 40), "grade": rng.uniform(-0.06, 0.12),
    }
    return cam, street


def render_scene(rng: np.random.Generator, size: tuple[int, int]) -> dict:
    """One scene: "rgb" uint8 (H, W, 3), "label_ids" uint8, "instance_ids" uint16,
    "disparity" uint16 (Cityscapes PNG encoding), "camera" dict (baseline, fx, fy, u0, v0, height, pitch, roll)."""
    h, w = size
    cam, street = sample_street(rng, h, w)
    baseline = BASELINE * rng.uniform(0.995, 1.005)
    cv = Canvas(h, w, haze=np.array([200, 205, 212], np.float32) + rng.uniform(-15, 15))
    _ground(rng, cv, cam, street)
    _facades(rng, cv, cam, street)
    draw_objects(rng, cv, cam, street, ground_height)
    hood = _hood(rng, cv, cam)
    _sky(rng, cv, cam, np.isinf(cv.z) & ~hood)
    rgb = cv.rgb * rng.uniform(0.8, 1.15) + rng.normal(0, 4.0, cv.rgb.shape)
    disparity = np.where(np.isfinite(cv.z), cam.f * baseline / cv.z, 0.0).astype(np.float32)
    camera = dict(baseline=baseline, fx=cam.f, fy=cam.f, u0=cam.u0, v0=cam.v0, height=cam.height,
                  pitch=cam.pitch, roll=cam.roll)
    return {"rgb": np.clip(rgb + 0.5, 0, 255).astype(np.uint8), "label_ids": cv.label,
            "instance_ids": cv.inst, "disparity": encode_disparity(disparity), "camera": camera}
