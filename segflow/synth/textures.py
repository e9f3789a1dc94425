"""Appearance of a synthetic scene: instance fills, the static background and its clutter.

Fills vary per instance (blotches, stripes, checks, speckle) so a model has to learn
outlines, not colors; the background's clutter (lines, arcs, elongated ellipses, jagged
blobs) resembles none of the labeled classes. Everything is drawn from the given
``numpy.random.Generator``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np


def _smooth_field(rng: np.random.Generator, hw: tuple[int, int], grid: tuple[int, int], ch: int = 3) -> np.ndarray:
    """Zero-mean, roughly unit-std random field: a coarse normal grid, cubic-upsampled."""
    g = rng.standard_normal((max(grid[0], 2), max(grid[1], 2), ch)).astype(np.float32)
    f = cv2.resize(g, (hw[1], hw[0]), interpolation=cv2.INTER_CUBIC)
    return f.reshape(hw[0], hw[1], ch)


def color_dir(rng: np.random.Generator) -> np.ndarray:
    """A random unit RGB direction (texture contrast with a tint, not just brightness)."""
    v = rng.standard_normal(3) + 1.0  # bias towards brightness so patterns stay visible
    return (v / (np.linalg.norm(v) + 1e-9)).astype(np.float32)


def make_texture(rng: np.random.Generator, side: int, base: np.ndarray) -> np.ndarray:
    """A (side, side, 3) uint8 fill: base color plus one random pattern plus fine grain.

    Patterns (smooth blotches, stripes, checks, speckle) vary per instance so that a
    model has to learn the outline rather than a fill.
    """
    kind = rng.integers(4)
    amp = float(rng.uniform(8, 24))
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    if kind == 0:
        pat = _smooth_field(rng, (side, side), (4, 4)) * amp
    elif kind == 1:
        th, period = rng.uniform(0, math.pi), rng.uniform(5, 16)
        wave = np.sin(2 * math.pi * (xx * math.cos(th) + yy * math.sin(th)) / period + rng.uniform(0, 6.3))
        pat = wave[..., None] * color_dir(rng) * amp
    elif kind == 2:
        cell = int(rng.integers(4, 11))
        chk = (((xx // cell) + (yy // cell)) % 2) * 2 - 1
        pat = chk[..., None] * color_dir(rng) * amp
    else:
        pat = cv2.GaussianBlur(rng.standard_normal((side, side, 3)).astype(np.float32), (0, 0), 1.2) * amp * 2.5
    grain = rng.standard_normal((side, side, 3)).astype(np.float32) * 3.0
    return np.clip(base.astype(np.float32) + pat + grain, 0, 255).astype(np.uint8)


def pick_color(rng: np.random.Generator, avoid: Sequence[tuple[np.ndarray, float]]) -> np.ndarray:
    """A color at least the given distance from each (color, distance); relaxes if stuck."""
    c = rng.uniform(0, 255, 3)
    for attempt in range(400):
        relax = 1.0 - attempt / 400  # never loop forever on crowded palettes
        if all(np.linalg.norm(c - a) >= d * relax for a, d in avoid):
            break
        c = rng.uniform(0, 255, 3)
    return c.astype(np.float32)


def make_background(rng: np.random.Generator, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A static (H, W, 3) uint8 background and its base color.

    Low-frequency color field + linear gradient + mid-frequency mottling + clutter
    (lines, arcs, elongated ellipses, irregular blobs) that resembles no labeled class.
    """
    h, w = hw
    base = rng.uniform(45, 210, 3).astype(np.float32)
    f = np.empty((h, w, 3), np.float32)
    f[:] = base
    f += _smooth_field(rng, hw, tuple(int(v) for v in rng.integers(2, 6, 2))) * 16
    th = rng.uniform(0, 2 * math.pi)
    ramp = (np.arange(w, dtype=np.float32)[None, :] * math.cos(th) / w + np.arange(h, dtype=np.float32)[:, None] * math.sin(th) / h)
    f += ramp[..., None] * (rng.uniform(-20, 20, 3).astype(np.float32))
    f += _smooth_field(rng, hw, (max(h // 24, 2), max(w // 24, 2))) * 5
    img = np.clip(f, 0, 255).astype(np.uint8)
    _draw_clutter(rng, img, base)
    grain = rng.standard_normal((h, w, 3)).astype(np.float32) * 2.5  # static fine texture
    return np.clip(img + grain, 0, 255).astype(np.uint8), base


def _draw_clutter(rng: np.random.Generator, img: np.ndarray, base: np.ndarray) -> None:
    """Draw low-contrast non-object clutter in place."""
    h, w = img.shape[:2]
    s = min(h / 480, w / 640)
    n = int(rng.integers(6, 17) * max(s * s * 1.5, 0.5))
    for _ in range(n):
        off = color_dir(rng) * rng.uniform(20, 60) * rng.choice([-1.0, 1.0])
        col = tuple(float(v) for v in np.clip(base + off, 0, 255))
        kind = rng.integers(4)
        x, y = float(rng.uniform(0, w)), float(rng.uniform(0, h))
        th = max(1, int(round(rng.uniform(1, 5) * max(s, 0.5))))
        if kind == 0:  # straight line
            a, ln = rng.uniform(0, 2 * math.pi), rng.uniform(0.15, 0.6) * max(h, w)
            p2 = (int(x + ln * math.cos(a)), int(y + ln * math.sin(a)))
            cv2.line(img, (int(x), int(y)), p2, col, th, cv2.LINE_AA)
        elif kind == 1:  # wiggly polyline
            steps = rng.normal(0, 18 * max(s, 0.5), (int(rng.integers(4, 10)), 2)).cumsum(axis=0)
            pts = (np.array([x, y]) + steps).astype(np.int32)
            cv2.polylines(img, [pts], False, col, th, cv2.LINE_AA)
        elif kind == 2:  # elongated ellipse or open arc: aspect >= 3, never a circle
            major = rng.uniform(20, 90) * max(s, 0.4)
            axes = (int(major), max(2, int(major / rng.uniform(3, 7))))
            span = 360 if rng.random() < 0.5 else rng.uniform(60, 200)
            fill = -1 if span == 360 else th
            cv2.ellipse(img, (int(x), int(y)), axes, rng.uniform(0, 180), 0, span, col, fill, cv2.LINE_AA)
        else:  # irregular blob: jagged radii keep it from reading as a circle or polygon class
            k = int(rng.integers(7, 13))
            ang = np.sort(rng.uniform(0, 2 * math.pi, k))
            rad = rng.uniform(0.35, 1.0, k) * rng.uniform(10, 40) * max(s, 0.4)
            pts = np.stack([x + rad * np.cos(ang), y + rad * np.sin(ang)], 1).astype(np.int32)
            cv2.fillPoly(img, [pts], col, cv2.LINE_AA)
