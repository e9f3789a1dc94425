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
from scipy.optimize import linear_sum_assignment

from segflow.ops.nms import mask_iou
from segflow.ops.tracker.state import FrameDetections, Track, TrackerConfig


def match_iou(
    tracks: list[Track], shifted: list[dict], t_idx: Iterable[int], dets: FrameDetections, d_idx: Iterable[int],
    cfg: TrackerConfig, parents: np.ndarray,
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
    rows, cols = linear_sum_assignment(-score)
    return [(t_idx[r], d_idx[c]) for r, c in zip(rows, cols) if score[r, c] > 0]


def match_reid(
    tracks: list[Track], predicted: np.ndarray, t_idx: Iterable[int], dets: FrameDetections, d_idx: Iterable[int],
    frame: int, gate: float, class_penalty: float = 1.0,
) -> list[tuple[int, int]]:
    """Optimal pairs by distance to where the track should be, over a gate.

    The gate is half of each object's size plus (1 px + half the track's speed) per
    frame lost, because constant velocity drifts. A detection much bigger than the
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
    radius = gate * (0.5 * ext_t[:, None] + 0.5 * ext_d[None, :] + (1.0 + 0.5 * speed[:, None]) * gap[:, None])
    same = np.array([tracks[i].label for i in t_idx])[:, None] == dets.labels[d_idx][None, :]
    # Another class costs ten times the class penalty of the gate: with a small penalty
    # (a model that confuses classes, class-agnostic NMS: 0.05) an object that comes back
    # nearby under another name keeps its id; from 0.1 (0.3 by default) re-identification
    # stays within a class.
    cost = dist / np.maximum(radius, 1.0) + np.where(same, 0.0, 10.0 * class_penalty)
    ok = (cost < 1.0) & (ext_d[None, :] <= 1.5 * ext_t[:, None] + 4)
    big = 1e6
    rows, cols = linear_sum_assignment(np.where(ok, cost, big))
    return [(t_idx[r], d_idx[c]) for r, c in zip(rows, cols) if ok[r, c]]
