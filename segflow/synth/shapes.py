"""The labeled classes' shapes, drawn without antialiasing (so a mask is exactly its pixels).

``CLASSES`` names them; `shape_mask` rasterizes one at a sub-pixel position (cv2's
fixed-point drawing, so slow shapes move smoothly); `circumradius` is the circle around it.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

CLASSES: tuple[str, ...] = ("circle", "square", "ring", "triangle")
"""Labeled classes; COCO category id of ``CLASSES[i]`` is ``i + 1``. Order is stable."""

_SHIFT = 4  # cv2 fixed-point bits: sub-pixel positions so slow shapes move smoothly
_ONE = 1 << _SHIFT


def circumradius(class_name: str, size: float) -> float:
    """Radius of the circle around a shape that is ``size`` px across (side or diameter)."""
    if class_name in ("circle", "ring"):
        return size / 2.0
    if class_name == "square":
        return size / math.sqrt(2.0)
    if class_name == "triangle":
        return size / math.sqrt(3.0)
    raise ValueError(f"unknown class {class_name!r}")


def shape_mask(
    class_name: str,
    size: float,
    center: tuple[float, float],
    shape_hw: tuple[int, int],
    *,
    angle: float = 0.0,
    inner: float = 0.5,
) -> np.ndarray:
    """Rasterize one shape (no antialiasing) into a bool (h, w) canvas.

    ``center`` is (x, y) in canvas pixels and may lie outside it (clipped shapes);
    ``angle`` is in radians (squares, triangles); ``inner`` is the ring's hole
    radius as a fraction of its outer radius.
    """
    canvas = np.zeros(shape_hw, np.uint8)
    cx, cy = center
    c = (int(round(cx * _ONE)), int(round(cy * _ONE)))
    if class_name in ("circle", "ring"):
        r = size / 2.0
        cv2.circle(canvas, c, int(round(r * _ONE)), 1, -1, cv2.LINE_8, _SHIFT)
        if class_name == "ring":  # punch a real hole: background shows through it
            cv2.circle(canvas, c, int(round(r * inner * _ONE)), 0, -1, cv2.LINE_8, _SHIFT)
    else:
        k = 4 if class_name == "square" else 3
        r = circumradius(class_name, size)
        start = angle + (math.pi / 4 if k == 4 else -math.pi / 2)
        t = start + 2 * math.pi * np.arange(k) / k
        pts = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)
        cv2.fillPoly(canvas, [np.round(pts * _ONE).astype(np.int32)], 1, cv2.LINE_8, _SHIFT)
    return canvas.view(bool)
