"""Pairs of instances on the same frame: which pairs there are, their polygon IoU, which
box lies inside which (numpy and shapely; the review queue's overlap and nested signals)."""

from __future__ import annotations

import numpy as np
import shapely


def same_frame_pairs(video: np.ndarray, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of rows on the same (video, frame).

    Args:
        video: (N,) int codes of each row's video (-1: null, in no pair).
        frame: (N,) int codes of each row's frame (-1: null, in no pair).
    Returns:
        (a, c), each (P,) int64 row positions, a < c: made per group size (a few sizes),
        not per frame, so a table of many images costs no call per image.
    """
    video, frame = np.asarray(video, np.int64), np.asarray(frame, np.int64)
    if not len(video):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    key = np.where((video >= 0) & (frame >= 0), video * (int(frame.max()) + 1) + frame, -1)
    order = np.argsort(key, kind="stable")  # each frame's rows together, ascending positions
    order = order[key[order] >= 0]
    k = key[order]
    starts = np.flatnonzero(np.concatenate([[True], k[1:] != k[:-1]]))[:len(k)]
    sizes = np.diff(np.concatenate([starts, [len(k)]]))
    a, c = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for m in np.unique(sizes[sizes >= 2]):
        first = starts[sizes == m][:, None]
        i, j = np.triu_indices(int(m), 1)
        a.append(order[(first + i).ravel()])
        c.append(order[(first + j).ravel()])
    return np.concatenate(a), np.concatenate(c)


def pair_iou(wkb: np.ndarray, boxes: np.ndarray, a: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Polygon IoU of the pairs (a, c) whose boxes overlap.

    Args:
        wkb: (N,) object array of WKB geometries; boxes: (N, 4) float x0, y0, x1, y1.
        a, c: (P,) int row positions of the pairs.
    Returns:
        (a, c, iou): the pairs whose boxes share some area (Q <= P each) and their IoU,
        (Q,) float64; only those rows' geometries are parsed.
    """
    lo, hi = np.maximum(boxes[a, :2], boxes[c, :2]), np.minimum(boxes[a, 2:], boxes[c, 2:])
    touch = ((hi - lo) > 0).all(axis=1)
    a, c = a[touch], c[touch]
    if not len(a):
        return a, c, np.zeros(0)
    used = np.unique(np.concatenate([a, c]))
    geoms = shapely.from_wkb(wkb[used])
    ga, gc = geoms[np.searchsorted(used, a)], geoms[np.searchsorted(used, c)]
    inter = shapely.area(shapely.intersection(ga, gc))
    return a, c, inter / np.maximum(shapely.area(ga) + shapely.area(gc) - inter, 1e-9)


def nested_in_larger(boxes: np.ndarray, area: np.ndarray, a: np.ndarray, c: np.ndarray, share: float) -> np.ndarray:
    """Rows with `share` of their box inside the box of a larger row of a pair.

    Args:
        boxes: (N, 4) float x0, y0, x1, y1; area: (N,) float instance areas (what "larger" compares).
        a, c: (P,) int row positions of the pairs (`same_frame_pairs`).
    Returns:
        (N,) float64: 1.0 where nested, else 0.0.
    """
    out = np.zeros(len(boxes))
    lo, hi = np.maximum(boxes[a, :2], boxes[c, :2]), np.minimum(boxes[a, 2:], boxes[c, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    own = np.maximum(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1), 1e-9)
    out[a[(inter / own[a] >= share) & (area[a] < area[c])]] = 1.0
    out[c[(inter / own[c] >= share) & (area[c] < area[a])]] = 1.0
    return out
