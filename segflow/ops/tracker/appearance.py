"""Appearance in matching: the mean colour of a track's own detections.

Motion tells two crossing objects apart while both are seen; when two same-class
objects meet (one hides the other, the model sees one shape), stop, turn or change
speed while hidden, motion alone cannot say which one comes out where. Each track keeps
the mean colour of its own detections (`Track.color`, a running mean over the frames it
was seen alone: a shape two tracks share is a mixture and is not counted), and a
detection whose colour is far from a track's and close to another nearby track's of
clearly different colour is that other one's, whatever the motion says.

With objects of one colour (or no colours: detections without them) nothing changes:
the rules below only fire when two tracks differ by more than `color_separation`.
"""

from __future__ import annotations

import numpy as np

from segflow.ops.tracker.state import FrameDetections, Track, TrackerConfig

COLOR_RATE = 0.2  # weight of the newest detection in a track's running colour


def observe_color(t: Track, dets: FrameDetections, d: int, outlier: float) -> None:
    """Fold detection `d`'s colour (when known) into track `t`'s running colour, unless it
    is more than `outlier` away from it (a shape shared with another object, a mask
    that took in background: the object's own colour does not jump)."""
    c = dets.color(d)
    if c is None:
        return
    if t.color is None:
        t.color = [float(v) for v in c]
    elif outlier <= 0 or float(np.linalg.norm(np.asarray(t.color) - c)) <= outlier:
        t.color = [(1 - COLOR_RATE) * a + COLOR_RATE * float(b) for a, b in zip(t.color, c)]


def front_by_color(a: Track, b: Track, dets: FrameDetections, d: int, separation: float) -> Track | None:
    """Which of two tracks seen as one shape (detection `d`) shows most of it, by colour.

    The shape's colour is a mix of the two objects' in the share each shows; the one in
    front shows all of itself. The share of `a` is the projection of the shape's colour
    on the line from `b`'s colour to `a`'s. None when the two colours are within
    `separation` of each other, a colour is unknown, or the share is near one half.
    """
    c = dets.color(d)
    if c is None or a.color is None or b.color is None or separation <= 0:
        return None
    ca, cb = np.asarray(a.color), np.asarray(b.color)
    span = ca - cb
    if float(np.linalg.norm(span)) <= separation:
        return None
    share = float(np.dot(c - cb, span) / np.dot(span, span))
    if abs(share - 0.5) < 0.03:
        return None
    return a if share > 0.5 else b


def track_colors(tracks: list[Track]) -> np.ndarray:
    """``(T, 3)`` float64 running colours of `tracks` (NaN rows: unknown)."""
    out = np.full((len(tracks), 3), np.nan)
    for i, t in enumerate(tracks):
        if t.color is not None:
            out[i] = t.color
    return out


def color_distances(colors: np.ndarray, dets: FrameDetections) -> np.ndarray | None:
    """``(T, D)`` distance between each track's colour (`colors`, from `track_colors`) and
    each detection's (NaN where either is unknown), or None when the detections carry no
    colours."""
    if dets.colors is None or not len(colors) or not len(dets.rles):
        return None
    return np.sqrt(((colors[:, None, :] - dets.colors[None, :, :]) ** 2).sum(axis=2))


def looks_like_another(
    tracks: list[Track], colors: np.ndarray, predicted: np.ndarray, dets: FrameDetections, frame: int,
    cfg: TrackerConfig, dist: np.ndarray | None,
) -> np.ndarray | None:
    """``(T, D)`` bool: detection `d` is not track `t`'s by colour.

    True when `d`'s colour is more than `color_separation` from `t`'s and within
    `color_tolerance` of another live track's of the same class, whose colour is
    more than `color_separation` from `t`'s and which could be there (its predicted
    centre, or where it was last seen, within two object sizes of the detection's
    centre plus its speed times the frames since it was seen). Only detections that
    two or more tracks could be are looked at (elsewhere nothing is ambiguous).

    Args:
        tracks: the live tracks.
        colors: ``(T, 3)`` their colours (`track_colors`).
        predicted: ``(T, 2)`` each track's predicted centre now.
        dets: the frame's detections.
        frame: the current frame.
        cfg: the tracker's settings (`color_tolerance`, `color_separation`).
        dist: `color_distances(colors, dets)`.

    Returns:
        The matrix, or None when colour says nothing (no colours, turned off, nothing
        ambiguous).
    """
    if dist is None or cfg.color_separation <= 0 or len(tracks) < 2:
        return None
    boxes = dets.boxes
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    ext_d = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    last = np.array([t.box for t in tracks])
    last = (last[:, :2] + last[:, 2:]) / 2
    ext_t = np.array([t.extent for t in tracks])
    motion = np.array([[t.vel[0], t.vel[1], frame - t.last_frame] for t in tracks])
    reach = (1.0 + np.hypot(motion[:, 0], motion[:, 1])) * np.maximum(motion[:, 2], 1.0)
    gap = np.minimum(np.linalg.norm(predicted[:, None, :] - centres[None, :, :], axis=2),
                     np.linalg.norm(last[:, None, :] - centres[None, :, :], axis=2))
    there = gap <= 2.0 * np.maximum(ext_t[:, None], ext_d[None, :]) + reach[:, None]  # (T, D)
    if not (there.sum(axis=0) >= 2).any():
        return None
    known = np.isfinite(dist)
    far = known & (dist > cfg.color_separation)
    near = there & known & (dist <= cfg.color_tolerance)
    if not far.any() or not near.any():
        return None
    apart = np.sqrt(((colors[:, None, :] - colors[None, :, :]) ** 2).sum(axis=2))
    apart = np.isfinite(apart) & (apart > cfg.color_separation)
    labels = np.array([t.label for t in tracks])
    same = labels[:, None] == labels[None, :]
    # out[t, d] = far[t, d] and any over o of (apart[t, o] and same[t, o] and near[o, d])
    other = (apart & same).astype(np.float64) @ near.astype(np.float64) > 0
    return far & other
