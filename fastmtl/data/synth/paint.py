"""Depth-tested painting of labels, instance ids, colours and depth; procedural texture."""
from __future__ import annotations

import numpy as np
from cityscapesscripts.helpers.labels import name2label

ID = {n: name2label[n].id for n in (
    "ego vehicle", "road", "sidewalk", "building", "wall", "vegetation", "terrain", "sky",
    "person", "car", "truck", "bus")}


def waves(rng, a, b, n=4, lo=0.2, hi=2.0):
    """Smooth texture in [-1, 1]: random plane waves over coordinates (a, b), in metres."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    out = np.zeros(np.broadcast(a, b).shape, np.float32)
    for _ in range(n):
        fa, fb = (rng.uniform(lo, hi, 2) * rng.choice([-1, 1], 2) * 2 * np.pi).astype(np.float32)
        out += np.sin(fa * a + fb * b + np.float32(rng.uniform(0, 2 * np.pi)))
    return out / np.float32(n)


class Canvas:
    """Labels, instance ids, colours and depth of the nearest surface painted so far."""

    def __init__(self, h, w, haze):
        self.v, self.u = np.mgrid[0:h, 0:w].astype(np.float32)
        self.z = np.full((h, w), np.inf, np.float32)
        self.label = np.full((h, w), ID["sky"], np.uint8)
        self.inst = np.full((h, w), ID["sky"], np.uint16)
        self.rgb = np.zeros((h, w, 3), np.float32)
        self.haze = haze

    def paint(self, win, mask, z, label, inst, colour):
        """Paint the ``mask`` pixels of window ``win`` that are nearer than what is there.

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
        a = (1.0 - np.exp(-z[m] / 300.0))[:, None]  # aerial perspective
        self.rgb[win][m] = colour * (1 - a) + self.haze * a
