"""Appearance of a detection: the mean colour of the frame's pixels under its mask.

Computed where the frame is at hand (the segment stage, per frame) and carried with the
raw detections as a small ``(N, 3)`` vector, so the tracker can tell apart two objects
that motion alone confuses (two same-class shapes that met, were seen as one, and
parted). Pure numpy on COCO RLEs: no mask is expanded to a full frame.
"""

from __future__ import annotations

import numpy as np

from segflow.ops.rle import rles_runs


def mask_colors(image: np.ndarray, rles: list[dict]) -> np.ndarray:
    """Mean colour of `image` under each mask.

    The RLE counts run down the columns: each run of ones is a stretch of the
    column-major image. All masks' pixels are gathered at once from their runs, so the
    cost follows the masks' areas, not the frame's.

    Args:
        image: ``(H, W, C)`` uint8 frame (RGB), the masks' frame.
        rles: N COCO RLEs of size ``[H, W]`` (compressed or uncompressed counts).

    Returns:
        ``(N, C)`` float32 mean of each mask's pixels (NaN for an empty mask).
    """
    n, c = len(rles), image.shape[2]
    h, w = image.shape[:2]
    out = np.full((n, c), np.nan, np.float32)
    if n == 0:
        return out
    for r in rles:
        if int(r["size"][0]) != h or int(r["size"][1]) != w:
            raise ValueError(f"mask size {list(r['size'])} is not the frame's {[h, w]}")
    runs, start = rles_runs(rles)
    which = np.repeat(np.arange(n), np.diff(start))
    ends = np.cumsum(runs)
    ends -= np.repeat(ends[start[:-1]] - runs[start[:-1]], np.diff(start))  # from each RLE's own start
    on = ((np.arange(len(runs)) - start[which]) % 2 == 1) & (runs > 0)
    length, first, owner = runs[on], ends[on] - runs[on], which[on]
    total = int(length.sum())
    if total == 0:
        return out
    # pixel i of run k: first[k] + i, column-major -> (row, column) of the image
    offset = np.repeat(first - (np.cumsum(length) - length), length) + np.arange(total)
    pixels = image[offset % h, offset // h].astype(np.float64)
    area = np.bincount(owner, weights=length, minlength=n)
    sums = np.stack([np.bincount(np.repeat(owner, length), weights=pixels[:, k], minlength=n) for k in range(c)], 1)
    has = area > 0
    out[has] = (sums[has] / area[has, None]).astype(np.float32)
    return out


def color_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance between colours, ``(T, C)`` x ``(D, C)`` -> ``(T, D)`` float64
    (NaN where either colour is unknown)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2))
