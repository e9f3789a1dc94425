"""Associations of the tracker: which detection continues which track.

Each function takes the live tracks, a subset of them (`t_idx`), one frame's
detections and a subset of those (`d_idx`), and returns the optimal (Hungarian)
pairs ``(track index, detection index)`` that pass its gate. Pure numpy, scipy and
pycocotools on RLE masks.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pycocotools.mask as mask_utils

from segflow.ops.nms import mask_iou
from segflow.ops.tracker.motion import extent
from segflow.ops.tracker.state import FrameDetections, Track, TrackerConfig


def match_iou(
    tracks: list[Track], shifted: list[dict], t_idx: Iterable[int], dets: FrameDetections, d_idx: Iterable[int],
    cfg: TrackerConfig, parents: np.ndarray, veto: np.ndarray | None = None,
) -> list[tuple[int, int]]:
    """Optimal pairs (track, detection) by motion-shifted mask IoU >= `cfg.match_iou`.

    A detection of another class than the track's scores its IoU minus
    `cfg.class_penalty`. A detection that covers most of both a fragment's and its
    parent's predicted masks is the split shape made whole again: it can only go to
    the parent.

    Args:
        tracks: the live tracks.
        shifted: each track's last mask moved to its predicted position (RLEs).
        t_idx: the tracks that may match.
        dets: the frame's detections.
        d_idx: the detections that may match.
        cfg: the tracker's settings.
        parents: ``(len(tracks),)`` int64 position of each track's parent, or -1.
        veto: ``(len(tracks), len(dets))`` bool, pairs refused whatever their IoU
            (a detection that looks like another track: `appearance.looks_like_another`),
            or None.

    Returns:
        The matched pairs.
    """
    t_idx, d_idx = list(t_idx), list(d_idx)
    if not t_idx or not d_idx:
        return []
    iou = mask_iou([shifted[i] for i in t_idx], [dets.rles[j] for j in d_idx])
    min_iou = cfg.match_iou
    same = np.array([tracks[i].label for i in t_idx])[:, None] == dets.labels[d_idx][None, :]
    adjusted = iou - np.where(same, 0.0, cfg.class_penalty)  # a class flip must be clearly the same mask
    score = np.where(adjusted >= min_iou, adjusted, 0.0)
    row = {t: r for r, t in enumerate(t_idx)}
    family = [(r, row[parents[t]]) for r, t in enumerate(t_idx) if parents[t] >= 0 and parents[t] in row]
    if family:
        # cover[i, j]: share of track i's predicted mask inside detection j.
        cover = np.asarray(
            mask_utils.iou([shifted[i] for i in t_idx], [dets.rles[j] for j in d_idx], [1] * len(d_idx)), np.float64
        ).reshape(len(t_idx), len(d_idx))
        for f, p in family:
            # A detection that swallows both parts is the shape made whole: the parent's.
            whole = same[p] & (cover[f] >= 0.5) & (cover[p] >= 0.5)
            best = np.maximum(iou[p], iou[f])
            score[p] = np.where(whole & (best >= min_iou), np.maximum(score[p], best), score[p])
            score[f, whole] = 0.0
    if veto is not None:
        score[veto[np.ix_(t_idx, d_idx)]] = 0.0
    rows, cols = assignment(-score)
    return [(t_idx[r], d_idx[c]) for r, c in zip(rows, cols) if score[r, c] > 0]


def match_reid(
    tracks: list[Track], predicted: np.ndarray, t_idx: Iterable[int], dets: FrameDetections, d_idx: Iterable[int],
    frame: int, gate: float, class_penalty: float = 1.0, track_buffer: int | None = None,
    claimed: set[int] | None = None, min_hits: int = 1, color: tuple[np.ndarray, np.ndarray, float, float] | None = None,
) -> list[tuple[int, int]]:
    """Optimal pairs by distance to where the track should be, over a gate.

    The gate is half of each object's size plus (1 px + the track's speed) per frame
    lost: constant velocity drifts, and a small fast object that turned (a bounce) can
    be as far as its speed takes it, in any direction; half the speed for a track seen
    on at most three frames (a blink's speed is not measured). A detection much bigger than the
    object is refused (size cue); a smaller one is not, since what comes back is often
    only partly visible (entering the frame, behind an occluder).

    Args:
        tracks: the live tracks.
        predicted: ``(len(tracks), 2)`` each track's predicted centre now.
        t_idx: the tracks that may match.
        dets: the frame's detections.
        d_idx: the detections that may match.
        frame: the current frame.
        gate: the gate radius, in object sizes.
        class_penalty: the tracker's class penalty (below 0.1 re-identification may
            cross classes).
        track_buffer: tracks lost for longer than this (waiting because they left
            the frame) match only detections coming in: within half the object's size
            of the frame's edge; beyond the gate too when of the same class (anywhere
            along the edge), but after every candidate within a gate. None: no such
            limit.
        claimed: detections (of `d_idx`) already matched to a young track: only a
            track of their class seen on at least `min_hits` frames may take them.
        min_hits: see `claimed`.
        color: ``(dist, veto, tolerance, separation)``: ``(len(tracks), len(dets))``
            colour distances (NaN: unknown) and refused pairs (`appearance`), the
            tracker's `color_tolerance` and `color_separation`. A colour further than
            the tolerance adds up to one gate to the cost (the nearer of two candidates
            by position can lose to the one of the right colour); a vetoed pair, or one
            more than twice the separation apart, is refused. None (or a separation of 0):
            position, size and class only.

    Returns:
        The matched pairs.
    """
    t_idx, d_idx = list(t_idx), list(d_idx)
    if not t_idx or not d_idx:
        return []
    ext_t = np.array([tracks[i].extent for i in t_idx])
    gap = np.array([frame - tracks[i].last_frame for i in t_idx], np.float64)
    speed = np.array([np.hypot(*tracks[i].vel) for i in t_idx])
    boxes = dets.boxes[d_idx]
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    ext_d = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    last = np.array([tracks[i].centre for i in t_idx])
    # Two hypotheses: constant velocity, or stayed put (velocity measured while the
    # object was disappearing is often wrong); the nearer one counts.
    dist = np.minimum(
        np.linalg.norm(predicted[t_idx][:, None, :] - centres[None, :, :], axis=2),
        np.linalg.norm(last[:, None, :] - centres[None, :, :], axis=2),
    )
    # A partly visible box (the last one seen, or the one coming back) has its centre up
    # to half the missing size away from the object's.
    seen_t = np.array([extent(tracks[i].box) for i in t_idx])
    partial = 0.5 * (ext_t - seen_t)[:, None] + 0.5 * np.maximum(ext_t[:, None] - ext_d[None, :], 0.0)
    # The drift allowed per frame lost: 1 px plus half the track's speed, or its whole
    # speed once measured over more than a few frames (an object that turned, a bounce,
    # can be as far as its speed takes it, in any direction; a blink's speed is not trusted).
    sure = np.array([tracks[i].hits > 3 for i in t_idx])
    drift = 1.0 + np.where(sure, 1.0, 0.5) * speed
    radius = gate * (0.5 * ext_t[:, None] + 0.5 * ext_d[None, :] + partial + (drift * gap)[:, None])
    same = np.array([tracks[i].label for i in t_idx])[:, None] == dets.labels[d_idx][None, :]
    # Another class costs ten times the class penalty of the gate: with a small penalty
    # (a model that confuses classes, class-agnostic NMS: 0.05) an object that comes back
    # nearby under another name keeps its id; from 0.1 (0.3 by default) re-identification
    # stays within a class.
    cost = dist / np.maximum(radius, 1.0) + np.where(same, 0.0, 10.0 * class_penalty)
    ok = (cost < 1.0) & (ext_d[None, :] <= 1.5 * ext_t[:, None] + 4)
    if color is not None and color[3] > 0:
        cdist, veto, tol, sep = color
        sub = cdist[np.ix_(t_idx, d_idx)]
        extra = np.where(np.isfinite(sub), np.clip((sub - tol) / max(2.0 * sep, 1.0), 0.0, 1.0), 0.0)
        if veto is not None:
            ok &= ~veto[np.ix_(t_idx, d_idx)]
        ok &= ~(np.isfinite(sub) & (sub > 2.0 * sep))  # far off in colour: not the object coming back
        cost = cost + extra  # the gate (`ok`) stays position's: colour only orders the candidates
    if claimed:
        hits = np.array([tracks[i].hits for i in t_idx])
        taken = np.array([d in claimed for d in d_idx])
        ok &= ~taken[None, :] | (same & (hits[:, None] >= min_hits))
    if track_buffer is not None and (gap > track_buffer + 1).any():
        h, w = tracks[t_idx[0]].size
        edge = np.minimum(np.minimum(boxes[:, 0], boxes[:, 1]), np.minimum(w - boxes[:, 2], h - boxes[:, 3]))
        out = gap[:, None] > track_buffer + 1  # waiting because it left the frame
        coming_in = edge[None, :] <= 0.5 * ext_t[:, None]
        # Out for that long, it may come back anywhere along the edge: past the gate, a
        # detection of its own class and size coming in still matches, after any nearer
        # candidate (cost 1 to 2, where the gate's are below 1).
        far = out & coming_in & same & ~ok & (ext_d[None, :] <= 1.5 * ext_t[:, None] + 4)
        cost = np.where(far, 1.0 + dist / np.hypot(h, w), cost)
        ok = (ok & ~(out & ~coming_in)) | far
    big = 1e6
    rows, cols = assignment(np.where(ok, cost, big))
    return [(t_idx[r], d_idx[c]) for r, c in zip(rows, cols) if ok[r, c]]


def covering_others(
    shifted: list[dict], parents: np.ndarray, done_t: set[int], updates: list[tuple[int, FrameDetections, int]],
    dets: FrameDetections, merged: set[int], min_cover: float = 0.5, grown: float = 1.25,
    weak: set[int] | None = None, labels: np.ndarray | None = None,
) -> list[tuple[int, int, int, float, float]]:
    """Matches (track, detection of `dets`) whose detection also covers most of another,
    unmatched track's predicted mask: two objects crossing, seen as one shape.

    Args:
        shifted: each track's predicted mask (RLEs).
        parents: ``(len(tracks),)`` int64 position of each track's parent, or -1
            (a fragment and its parent are one object: never counted).
        done_t: the tracks matched on this frame.
        updates: this frame's matches (track, detections, detection).
        dets: the detections whose matches are checked.
        merged: tracks already seen as one shape with another on the previous frame
            (the size test is not repeated: the one behind goes on hiding).
        min_cover: share of both predicted masks the detection must cover.
        grown: how much bigger than the track's predicted mask the detection must be.
        weak: tracks of `done_t` matched to a weak (second-pass) detection only: counted
            as others too when of the matched track's class (`labels`, ``(len(tracks),)``).

    Returns:
        (track, detection, other track, share of the track's prediction inside the
        detection, the same for the other track) for each such match.
    """
    weak = weak or set()
    others = [i for i in range(len(shifted)) if i not in done_t or i in weak]
    mine = [(t, d) for t, ds, d in updates if ds is dets]
    if not others or not mine:
        return []
    rows = [t for t, _ in mine] + others
    cols = sorted({d for _, d in mine})
    cover = np.asarray(
        mask_utils.iou([shifted[i] for i in rows], [dets.rles[j] for j in cols], [1] * len(cols)), np.float64
    ).reshape(len(rows), len(cols))  # share of each predicted mask inside each detection
    col = {d: c for c, d in enumerate(cols)}
    det_area = mask_utils.area([dets.rles[j] for j in cols])
    own_area = mask_utils.area([shifted[t] for t, _ in mine])
    out = []
    for r, (t, d) in enumerate(mine):
        # Only a shape clearly bigger than the track's own is two objects (a small one
        # hidden behind a large one leaves the large one's shape as it is).
        if cover[r, col[d]] < min_cover or (t not in merged and det_area[col[d]] < grown * own_area[r]):
            continue
        for k, o in enumerate(others):
            if o in weak and (o == t or labels is None or labels[o] != labels[t]):
                continue
            if cover[len(mine) + k, col[d]] >= min_cover and parents[o] != t and parents[t] != o:
                out.append((t, d, o, float(cover[r, col[d]]), float(cover[len(mine) + k, col[d]])))
                break
    return out


def assignment(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The minimum-cost assignment of a ``(T, D)`` cost matrix: ``(rows, cols)`` index arrays
    (scipy's `linear_sum_assignment`, imported here: scipy.optimize costs ~0.5 s to import,
    and a rerun the cache serves imports this module but never tracks)."""
    from scipy.optimize import linear_sum_assignment

    return linear_sum_assignment(cost)
