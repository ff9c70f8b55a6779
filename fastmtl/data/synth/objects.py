"""Things and trees: upright billboards standing on the ground of the street.

An object at depth z is a vertical plane z = const in the world; its shape
is a mask over billboard coordinates a (metres right of its centre) and b
(metres above the ground under it). Cars, trucks and buses are seen from
behind; persons stand on the sidewalks or cross the road; trees line the
kerbs. Sizes and depths keep most things several head cells wide at the
default size (the network's heads work at 1/8 resolution).
"""
from __future__ import annotations

import numpy as np

from .paint import ID, waves

_CAR_COLOURS = np.array([
    [225, 225, 222], [30, 30, 34], [165, 168, 172], [110, 112, 118], [150, 25, 28],
    [28, 50, 130], [30, 80, 50], [200, 170, 40], [120, 70, 40], [90, 120, 160],
], dtype=np.float32)
_BUS_COLOURS = np.array([[230, 190, 30], [200, 40, 35], [40, 90, 170], [235, 235, 230]], dtype=np.float32)
THINGS = ("person", "car", "truck", "bus")


def _car(rng, a, b, w, h):
    body = _CAR_COLOURS[rng.integers(len(_CAR_COLOURS))] + rng.uniform(-12, 12, 3)
    half = w / 2
    wheels = (b < 0.38) & (np.abs(a) > half - 0.45) & (np.abs(a) < half - 0.08)
    lower = (np.abs(a) <= half) & (b >= 0.25) & (b <= 0.6 * h)
    taper = half * (1 - 0.3 * (b - 0.6 * h) / (0.4 * h))
    cabin = (b > 0.6 * h) & (b <= h) & (np.abs(a) <= taper)
    glass = cabin & (np.abs(a) <= taper - 0.12) & (b < h - 0.08)
    lights = lower & (np.abs(a) > half - 0.3) & (b > 0.42 * h) & (b < 0.55 * h)
    col = np.broadcast_to(body, (*a.shape, 3)).copy()
    col *= (1 + 0.15 * (b / h - 0.5))[..., None]  # lit from above
    col[glass] = [35, 45, 60]
    col[lights] = [210, 30, 30]
    col[wheels & ~lower] = [20, 20, 20]
    return wheels | lower | cabin, col


def _truck(rng, a, b, w, h):
    """A box truck from behind: a tall plain cargo box with doors, wheels under it."""
    box = np.array([220, 220, 215]) * rng.uniform(0.75, 1.0) + rng.uniform(-10, 10, 3)
    half = w / 2
    wheels = (b < 0.5) & (np.abs(a) > half - 0.6) & (np.abs(a) < half - 0.1)
    body = (np.abs(a) <= half) & (b >= 0.45) & (b <= h)
    col = np.broadcast_to(box, (*a.shape, 3)).copy()
    col[body & (np.abs(a) < 0.04)] *= 0.6  # the line between the doors
    col[body & (b < 0.8)] = [45, 45, 48]  # bumper
    col[body & (b > 0.55) & (b < 0.7) & (np.abs(a) > half - 0.25)] = [220, 140, 30]
    col[wheels & ~body] = [20, 20, 20]
    return wheels | body, col


def _bus(rng, a, b, w, h):
    """A bus from behind: tall, one strong colour, a wide rear window and a destination sign."""
    paint = _BUS_COLOURS[rng.integers(len(_BUS_COLOURS))] + rng.uniform(-10, 10, 3)
    half = w / 2
    wheels = (b < 0.45) & (np.abs(a) > half - 0.55) & (np.abs(a) < half - 0.1)
    body = (np.abs(a) <= half) & (b >= 0.35) & (b <= h)
    window = body & (np.abs(a) < half - 0.2) & (b > 0.55 * h) & (b < 0.88 * h)
    sign = body & (np.abs(a) < 0.6) & (b >= 0.9 * h) & (b < h - 0.05)
    col = np.broadcast_to(paint, (*a.shape, 3)).copy()
    col[window] = [30, 40, 50]
    col[sign] = [250, 150, 20]
    col[body & (b < 0.6)] *= 0.5
    col[wheels & ~body] = [20, 20, 20]
    return wheels | body, col


def _person(rng, a, b, h):
    skin = np.array([225, 180, 150]) * rng.uniform(0.45, 1.0)
    shirt = rng.uniform(20, 230, 3)
    pants = rng.uniform(20, 110, 3)
    head_c = h - 0.12
    head = (a / 0.11) ** 2 + ((b - head_c) / 0.13) ** 2 <= 1
    torso = (b >= 0.5 * h) & (b <= h - 0.22) & (np.abs(a) <= 0.25 - 0.06 * (h - 0.22 - b) / (0.28 * h))
    stride = rng.uniform(0, 0.15)
    legs = (b < 0.5 * h) & (np.abs(np.abs(a) - 0.1 - stride * (0.5 * h - b) / h) < 0.08)
    col = np.empty((*a.shape, 3), np.float32)
    col[...] = pants
    col[torso] = shirt
    col[head] = np.where(b[head, None] > head_c + 0.05, np.array([40, 30, 25]), skin)
    return head | torso | legs, col


def _tree(rng, a, b, trunk, r):
    stem = (np.abs(a) < 0.18) & (b < trunk + r * 0.5)
    edge = r * (1 + 0.15 * waves(rng, np.arctan2(b - trunk - r, a) * 3, 0 * a, lo=0.5, hi=2))
    crown = np.hypot(a, b - trunk - r) <= edge
    leaves = np.array([50, 95, 30]) * (1 + 0.35 * waves(rng, a * 2, b * 2, n=6, lo=1.5, hi=5))[..., None]
    return stem | crown, np.where(crown[..., None], leaves, np.array([80, 60, 45], np.float32))


def _layout(rng, street):
    """(z, x, width, height, kind, shape arguments) of every object, far to near."""
    xl, xr, left, right = street["xl"], street["xr"], street["left"], street["right"]
    lanes = np.arange(xl + 1.6, xr - 1.2, 3.25)
    if not lanes.size:
        lanes = np.array([0.0])

    def lane():
        return rng.choice(lanes) + rng.uniform(-0.3, 0.3)

    def sidewalk(margin=0.4):
        return rng.uniform(left + margin, xl - margin) if rng.random() < 0.5 else rng.uniform(xr + margin, right - margin)

    # The first car is in a lane near the middle, close enough to be seen in every scene.
    middle = lanes[np.argmin(np.abs(lanes))]
    out = [(rng.uniform(7, 22), middle + rng.uniform(-0.3, 0.3), rng.uniform(1.7, 2.0), rng.uniform(1.4, 1.7), "car")]
    for _ in range(rng.integers(0, 6)):
        if rng.random() < 0.3:  # parked at the kerb
            w = rng.uniform(1.7, 2.0)
            x = (xl + w / 2 + 0.2) if rng.random() < 0.5 else (xr - w / 2 - 0.2)
        else:
            x = lane()
        out.append((rng.uniform(5, 45), x, rng.uniform(1.7, 2.0), rng.uniform(1.4, 1.7), "car"))
    for _ in range(rng.binomial(2, 0.3)):
        big = "bus" if rng.random() < 0.5 else "truck"
        height = rng.uniform(3.0, 3.4) if big == "bus" else rng.uniform(2.8, 3.6)
        out.append((rng.uniform(9, 45), lane(), rng.uniform(2.4, 2.55), height, big))
    for _ in range(rng.integers(0, 8)):
        x = rng.uniform(xl, xr) if rng.random() < 0.15 else sidewalk()  # some cross the road
        out.append((rng.uniform(4, 20), x, 0.7, rng.uniform(1.55, 1.95), "person"))
    for _ in range(rng.integers(0, 5)):
        r = rng.uniform(1.5, 3.0)
        x = (xl - rng.uniform(0.6, 1.2)) if rng.random() < 0.5 else (xr + rng.uniform(0.6, 1.2))
        trunk = rng.uniform(1.8, 3.5)
        out.append((rng.uniform(8, 60), x, 2 * r * 1.2, trunk + 2 * r * 1.15, ("tree", trunk, r)))
    return sorted(out, key=lambda o: -o[0])


def _shape(rng, kind, a, b, width, height):
    if kind == "car":
        return _car(rng, a, b, width, height)
    if kind == "truck":
        return _truck(rng, a, b, width, height)
    if kind == "bus":
        return _bus(rng, a, b, width, height)
    if kind == "person":
        return _person(rng, a, b, height)
    return _tree(rng, a, b, kind[1], kind[2])


def draw_objects(rng, cv, cam, street, ground_height):
    """Paint every object of a random layout onto the canvas, with instance ids."""
    h, w = cv.z.shape
    counts = {}
    crowd_done = rng.random() >= 0.3  # about one scene in three has a crowd region
    for z, x, width, height, kind in _layout(rng, street):
        base = float(ground_height(street, z))
        corners = [(x + sx * width / 2, base + sy * height, z) for sx in (-1, 1) for sy in (0, 1)]
        uv = cam.project(corners)
        if np.isnan(uv).any():
            continue
        x0, x1 = max(int(np.floor(uv[:, 0].min())) - 1, 0), min(int(np.ceil(uv[:, 0].max())) + 2, w)
        y0, y1 = max(int(np.floor(uv[:, 1].min())) - 1, 0), min(int(np.ceil(uv[:, 1].max())) + 2, h)
        if x1 <= x0 or y1 <= y0:
            continue
        win = np.s_[y0:y1, x0:x1]
        ray = cam.ray[win]
        t = z / ray[..., 2]  # depth along the optical axis of the hit on the plane z
        a, b = t * ray[..., 0] - x, t * ray[..., 1] - base
        mask, col = _shape(rng, kind, a, b, width, height)
        name = kind if isinstance(kind, str) else "vegetation"
        label = ID[name]
        if name in THINGS:
            if name == "car" and z > 30 and not crowd_done:
                inst, crowd_done = label, True  # a crowd region: class without an instance
            else:
                inst = label * 1000 + counts.get(name, 0)
                counts[name] = counts.get(name, 0) + 1
        else:
            inst = label
        cv.paint(win, mask, t, label, inst, col)
