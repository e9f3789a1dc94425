"""Motion model of the tracker: how far an object moved, and where it should be now.

Boxes are float arrays ``(4,)`` ``x0, y0, x1, y1`` in pixels; displacements and
velocities are ``(2,)`` ``dx, dy`` (pixels, pixels per frame); frame sizes are
``(H, W)``. Pure numpy, no state.
"""

from __future__ import annotations

import numpy as np


def box_step(old: np.ndarray, new: np.ndarray, prior: np.ndarray | None = None) -> np.ndarray:
    """Displacement (dx, dy) of an object from its old to its new visible box.

    The box centre jumps when the visible part changes (an occluder covers one side,
    the object leaves the frame, a detection covers only part of it). Per axis: when
    the box kept its size (up to mask noise), the centre's move; when it changed and
    one edge stayed put or both edges moved the same way, the smaller edge move (the
    other edge is the one being covered or uncovered); when both moved apart or
    together (the visible chord of a shape at a border), the centre's.

    With a `prior` (the move the track's velocity predicts), a box that changed size
    moves with the edge whose move is nearer the prior, whatever the edges did: a
    moving occluder covers one side while the other goes on at the object's speed,
    and the covered side's edge can move either way.

    Args:
        old: ``(4,)`` the previous box.
        new: ``(4,)`` the current box.
        prior: ``(2,)`` the predicted move, or None (a new track: no motion known).

    Returns:
        ``(2,)`` float64 displacement ``dx, dy``.
    """
    p = None if prior is None else (float(prior[0]), float(prior[1]))
    return np.array(box_step_xy(old.tolist(), new.tolist(), p))


def box_step_xy(
    old: list[float], new: list[float], prior: tuple[float, float] | None = None
) -> tuple[float, float]:
    """`box_step` on plain floats (the tracker calls it per match per frame)."""
    (ox0, oy0, ox1, oy1), (nx0, ny0, nx1, ny1) = old, new
    out = []
    for axis, (lo, hi, size) in enumerate(((nx0 - ox0, nx1 - ox1, ox1 - ox0), (ny0 - oy0, ny1 - oy1, oy1 - oy0))):
        size = max(size, 1.0)
        resized = abs(hi - lo) > 0.1 * size + 2
        if resized and prior is not None:
            p = prior[axis]
            out.append(lo if abs(lo - p) <= abs(hi - p) else hi)
            continue
        edge = min(abs(lo), abs(hi)) <= 3.0 + 0.02 * size or lo * hi > 0
        out.append((lo if abs(lo) < abs(hi) else hi) if resized and edge else (lo + hi) / 2)
    return out[0], out[1]


def clamp_displacement(box: np.ndarray, d: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Integer displacement `d` (dx, dy) limited so `box` moved by it stays in the frame.

    Besides keeping RLE shifts exact, this is the motion model at the border: a track
    that left the frame is predicted to wait where it left, which is where objects
    that turn around outside come back.

    Args:
        box: ``(4,)`` the box to move.
        d: ``(2,)`` the wanted displacement.
        size: ``(H, W)`` of the frame.

    Returns:
        ``(2,)`` int64 displacement.
    """
    return np.array(clamped_xy(box.tolist(), float(d[0]), float(d[1]), size), np.int64)


def clamped_xy(box: list[float], dx: float, dy: float, size: tuple[int, int]) -> tuple[int, int]:
    """`clamp_displacement` on plain floats (the tracker calls it per track per frame)."""
    h, w = size
    return int(min(max(round(dx), -box[0]), w - box[2])), int(min(max(round(dy), -box[1]), h - box[3]))


def extent(box: np.ndarray | list[float]) -> float:
    """An object's size: the longer side of its box ``(4,)``, at least 1 px."""
    return float(max(box[2] - box[0], box[3] - box[1], 1.0))


def at_border(box: np.ndarray | list[float], size: tuple[int, int], margin: float = 2.0) -> bool:
    """Whether a box ``(4,)`` touches the edge of a frame of `size` ``(H, W)`` (within `margin` px)."""
    h, w = size
    return bool(box[0] <= margin or box[1] <= margin or box[2] >= w - margin or box[3] >= h - margin)
