"""Mask IoU and greedy non-maximum suppression on COCO RLE masks (no decoding to pixels)."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils

from segflow.contracts import Detections


def mask_iou(a: list[dict], b: list[dict]) -> np.ndarray:
    """IoU of every mask of `a` with every mask of `b`, computed on the RLEs (pycocotools).

    Args:
        a: N COCO RLEs; b: M COCO RLEs, all of the same size.
    Returns:
        (N, M) float64 IoU matrix.
    """
    if not a or not b:
        return np.zeros((len(a), len(b)), np.float64)
    return np.asarray(mask_utils.iou(a, b, [0] * len(b)), np.float64).reshape(len(a), len(b))


def nms_masks(
    rles: list[dict], scores: np.ndarray, labels: np.ndarray, iou_threshold: float, class_agnostic: bool
) -> np.ndarray:
    """Indices kept by greedy NMS on mask IoU, highest score first.

    Of two instances whose mask IoU is above `iou_threshold`, the lower-scored one is
    dropped; unless `class_agnostic`, only same-class pairs compete. torchvision.ops.nms
    works on boxes only, and box IoU misjudges rings and crossing shapes, so the
    suppression runs on a mask IoU matrix.

    Args:
        rles: N COCO RLEs.
        scores: (N,) float scores.
        labels: (N,) int class labels.
        iou_threshold: IoU above which the lower-scored instance is dropped.
        class_agnostic: let instances of different classes suppress each other.
    Returns:
        (K,) int64 indices into `rles` of the kept instances, by descending score.
    """
    order = np.argsort(-scores, kind="stable")
    iou = mask_iou([rles[i] for i in order], [rles[i] for i in order])
    same = np.ones_like(iou, bool) if class_agnostic else labels[order][:, None] == labels[order][None, :]
    conflict = (iou > iou_threshold) & same
    alive = np.ones(len(order), bool)
    for i in range(len(order)):
        if alive[i]:
            conflict[i, : i + 1] = False
            alive &= ~conflict[i]
    return order[alive]


def filter_detections(
    det: Detections, confidence: float, iou_threshold: float, class_agnostic: bool = False
) -> np.ndarray:
    """Positions in `det` that survive the confidence threshold and per-frame NMS.

    Returned in (frame, score desc) order so downstream stages see a stable order.
    """
    passing = np.flatnonzero(det.score >= confidence)
    kept = []
    for frame in np.unique(det.frame[passing]):
        idx = passing[det.frame[passing] == frame]
        sub = nms_masks([det.rles[i] for i in idx], det.score[idx], det.label[idx], iou_threshold, class_agnostic)
        kept.append(idx[sub])
    return np.concatenate(kept).astype(np.int64) if kept else np.zeros(0, np.int64)


def filter_with_low(
    det: Detections, mapped: np.ndarray, confidence: float, iou_threshold: float, class_agnostic: bool,
    low_score: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Kept positions (`filter_detections` over the mapped classes) and, when `low_score`
    is given, the tracker's second-pass candidates: mapped detections scoring from
    `low_score` up to the confidence that survive the same NMS, in ascending order.

    Greedy NMS is prefix-consistent (whether an instance survives depends only on
    higher-scored ones), so one NMS down to the lower score gives both sets exactly.
    Unmapped classes leave before NMS so they never suppress a labeled instance.
    """
    ok = np.flatnonzero(mapped)
    floor = confidence if low_score is None else min(low_score, confidence)
    survivors = ok[filter_detections(det.take(ok), floor, iou_threshold, class_agnostic)]
    high = det.score[survivors] >= confidence
    return survivors[high], np.sort(survivors[~high])
