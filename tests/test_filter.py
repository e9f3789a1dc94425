"""The filter stage: one NMS gives the kept set and the tracker's low-score candidates."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils
import pytest

from segflow.contracts import Detections
from segflow.ops.nms import filter_detections, filter_with_low


def _detections(seed: int, n: int = 120, frames: int = 6, h: int = 40, w: int = 50) -> Detections:
    """Overlapping boxes of 3 classes over a few frames, scores with ties."""
    rng = np.random.default_rng(seed)
    rles = []
    for _ in range(n):
        m = np.zeros((h, w), np.uint8)
        y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
        m[y:y + rng.integers(4, 16), x:x + rng.integers(4, 16)] = 1
        rles.append(mask_utils.encode(np.asfortranarray(m)))
    return Detections(
        frame=rng.integers(0, frames, n).astype(np.int64), timestamp=np.zeros(n),
        label=rng.integers(1, 4, n).astype(np.int64), score=np.round(rng.random(n), 2).astype(np.float32),
        boxes=np.zeros((n, 4), np.float32), rles=rles,
    )


def _second_pass_alone(det: Detections, mapped: np.ndarray, low_score: float, confidence: float, iou_threshold: float,
                       class_agnostic: bool) -> np.ndarray:
    """The tracker's low-score candidates by a pass of their own: NMS over the mapped
    detections scoring at least `low_score`, those below the confidence kept."""
    ok = np.flatnonzero(np.isin(det.label, mapped) & (det.score >= low_score))
    if ok.size == 0:
        return np.zeros(0, np.int64)
    keep = ok[filter_detections(det.take(ok), low_score, iou_threshold, class_agnostic)]
    return np.sort(keep[det.score[keep] < confidence])


@pytest.mark.parametrize("low_score", [None, 0.1, 0.5, 0.9])
@pytest.mark.parametrize("agnostic", [False, True])
def test_kept_and_low_candidates_match_two_separate_passes(low_score, agnostic):
    for seed in range(5):
        det = _detections(seed)
        mapped = det.label != 3  # class 3 is not in the ontology
        kept, low = filter_with_low(det, mapped, 0.6, 0.3, agnostic, low_score)
        ok = np.flatnonzero(mapped)
        assert np.array_equal(kept, ok[filter_detections(det.take(ok), 0.6, 0.3, agnostic)])
        if low_score is None:
            assert len(low) == 0
            continue
        expected = _second_pass_alone(det, np.array([1, 2]), low_score, 0.6, 0.3, agnostic)
        assert np.array_equal(low, expected)
        assert low_score >= 0.6 or len(low) > 0
