"""A mask's exact pixel-edge outline: the crop around it and its traced (Multi)Polygon.

Pixel (row r, col c) is the unit square [c, c + 1] x [r, r + 1], so the outline's area is
the mask's pixel count and `segflow.ops.raster.rasterize` draws it back onto the same
pixels. `segflow.ops.polygon` simplifies these outlines. Pure numpy/shapely/OpenCV.
"""

from __future__ import annotations

import cv2
import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry


def crop_mask(mask: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """The mask's bounding box plus a one-pixel zero margin (clipped to the frame), as
    C-ordered uint8, and the box's (x, y) offset in the frame.

    Tracing the crop with `findContours(offset=...)` gives the same integer contour
    points, in the same order and hierarchy, as tracing the whole frame (raster order
    is kept and the margin is zeros like the pixels around it), at a fraction of the
    cost for an object much smaller than the frame.

    Args:
        mask: (H, W) bool or 0/1 mask.
    Returns:
        crop: (h, w) uint8, C-ordered ((1, 1) zeros for an empty mask); offset: (x, y).
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if len(rows) == 0:
        return np.zeros((1, 1), np.uint8), (0, 0)
    cols = np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    y0, y1 = max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, h)
    x0, x1 = max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, w)
    return np.ascontiguousarray(mask[y0:y1, x0:x1], dtype=np.uint8), (x0, y0)


def trace_crop(crop: np.ndarray, offset: tuple[int, int]) -> BaseGeometry:
    """The exact pixel-edge outline of a `crop_mask` crop: every part and every hole.

    The polygon covers exactly the mask's pixels (pixel (r, c) = [c, c + 1] x [r, r + 1]):
    its area is the pixel count and `segflow.ops.raster.rasterize` gives the mask back.
    OpenCV traces the mask upsampled 2x, where each boundary sub-pixel lies in one corner
    of its pixel; `(sub-pixel + 1) // 2` is that corner, so every traced point lands on a
    pixel corner of the boundary. Pixels touching only diagonally become separate parts.

    Args:
        crop: (h, w) uint8 0/1, C-ordered (as `crop_mask` gives).
        offset: (x, y) of the crop's top-left pixel in the frame.
    Returns:
        valid Polygon or MultiPolygon in frame pixel-edge coordinates (empty if no pixel).
    """
    doubled = np.repeat(np.repeat(crop, 2, axis=0), 2, axis=1)
    contours, hierarchy = cv2.findContours(doubled, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return Polygon()
    hierarchy = hierarchy[0]
    origin = np.asarray(offset, np.int64)
    parts = []
    for i, contour in enumerate(contours):
        if hierarchy[i][3] != -1:
            continue  # a hole; handled with its parent
        holes = []
        child = hierarchy[i][2]
        while child != -1:
            holes.append(_pixel_corners(contours[child]) + origin)
            child = hierarchy[child][0]
        parts.append(Polygon(_pixel_corners(contour) + origin, holes))
    geom = parts[0] if len(parts) == 1 else MultiPolygon(parts)
    # a ring through a corner where pixels touch diagonally touches itself: split it there
    return geom if geom.is_valid else polygonal(shapely.make_valid(geom))


def _pixel_corners(contour: np.ndarray) -> np.ndarray:
    """(K, 2) int64 pixel corners of a contour traced on the 2x upsampled mask, repeats dropped."""
    corners = (contour.reshape(-1, 2).astype(np.int64) + 1) // 2
    return corners[np.any(corners != np.roll(corners, 1, axis=0), axis=1)]


def polygonal(geom: BaseGeometry) -> BaseGeometry:
    """Keep only the polygonal parts of a geometry (make_valid may add lines)."""
    if isinstance(geom, (Polygon, MultiPolygon)):
        return geom
    polys = [g for g in getattr(geom, "geoms", []) if isinstance(g, (Polygon, MultiPolygon))]
    return shapely.union_all(polys) if polys else Polygon()
