"""Appearance of a detection: the mean colour of the frame's pixels under its mask.

Computed where the frame is at hand (the segment stage, per frame) and carried with the
raw detections as a small ``(N, 3)`` vector, so the tracker can tell apart two objects
that motion alone confuses (two same-class shapes that met, were seen as one, and
parted). Pure numpy on COCO RLEs: no mask is expanded to a full frame.
"""

from __future__ import annotations

import numpy as np

from segflow.ops.rle import rle_crops


def mask_colors(image: np.ndarray, rles: list[dict]) -> np.ndarray:
    """Mean colour of `image` under each mask.

    Each mask is cut to its box (`rle_crops`, without expanding a full frame), so the
    cost follows the objects' sizes, not the frame's.

    Args:
        image: ``(H, W, C)`` uint8 frame (RGB), the masks' frame.
        rles: N COCO RLEs of size ``[H, W]`` (compressed or uncompressed counts).

    Returns:
        ``(N, C)`` float32 mean of each mask's pixels (NaN for an empty mask).
    """
    c = image.shape[2]
    h, w = image.shape[:2]
    out = np.full((len(rles), c), np.nan, np.float32)
    for r in rles:
        if int(r["size"][0]) != h or int(r["size"][1]) != w:
            raise ValueError(f"mask size {list(r['size'])} is not the frame's {[h, w]}")
    for i, (crop, (x0, y0)) in enumerate(rle_crops(rles)):
        on = crop.view(bool)
        n = int(np.count_nonzero(on))
        if n:
            out[i] = image[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]][on].mean(axis=0)
    return out


def color_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance between colours, ``(T, C)`` x ``(D, C)`` -> ``(T, D)`` float64
    (NaN where either colour is unknown)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2))
