"""Stage 3, filter: confidence threshold, then greedy mask-IoU NMS per frame."""

from __future__ import annotations

import numpy as np

from segflow.ops.nms import nms_masks
from segflow.contracts import Detections


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


# ---- Prefect wrapper ---------------------------------------------------------------


from prefect import task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from segflow.storage.keys import key_of  # noqa: E402
from segflow.storage.table import indices_meta, load_detections, save_indices  # noqa: E402
from segflow.contracts import FrameRange, StageOutput, VideoInfo  # noqa: E402


def mapped_labels(job) -> np.ndarray:
    """Model labels whose class the ontology maps (the others are dropped)."""
    return np.array([i + 1 for i, c in enumerate(job.model.classes) if c in job.ontology.objects], np.int64)


def second_pass_score(job) -> float | None:
    """The tracker's low score, or None when tracking is off (no second pass)."""
    return job.settings.track_low_score if job.settings.tracking else None


def kept_location(job, video: VideoInfo, rng: FrameRange, raw: StageOutput) -> tuple[str, object]:
    """The cache key and path of a range's kept indices. Not keyed by the tracker's low
    score: the second-pass candidates stored beside them say which score they are for
    (the track stage finds them itself for another), so tracking settings never make
    the kept set, and the polygons after it, be redone."""
    s = job.settings
    key = key_of("kept", raw.key, s.confidence, s.iou_threshold, s.class_agnostic_nms, job.ontology.digest)
    return key, job.layout.cache("kept", video.video_id, rng, key)


def cached_kept(job, video: VideoInfo, rng: FrameRange, raw: StageOutput) -> StageOutput | None:
    """The range's kept indices when they are cached already (with their counts), else None."""
    key, path = kept_location(job, video, rng, raw)
    meta = indices_meta(path) if path.exists() else None
    if meta is None or "dropped_unmapped" not in meta:
        return None
    return StageOutput(str(path), key, True, dropped_unmapped=int(meta["dropped_unmapped"]))


@task(name="filter", cache_policy=NO_CACHE)
def filter_task(job, videos: list[VideoInfo], ranges: list[FrameRange], raw: list[StageOutput]) -> list[StageOutput]:
    """`filter_range` over ranges (`videos[i]`'s `ranges[i]`: one task run for all that are ready)."""
    return [filter_range(job, *args) for args in zip(videos, ranges, raw)]


def filter_range(job, video: VideoInfo, rng: FrameRange, raw: StageOutput) -> StageOutput:
    """Confidence + NMS + ontology mapping over one range's raw output (cached)."""
    s = job.settings
    key, path = kept_location(job, video, rng, raw)
    det = load_detections(raw.file)
    mapped = np.isin(det.label, mapped_labels(job))
    dropped = _unmapped(det, s.confidence, mapped)
    if path.exists():
        return StageOutput(str(path), key, True, dropped_unmapped=dropped)
    # The tracker's low-score candidates come out of the same NMS: computed here, beside
    # the other ranges, rather than in the one-range-at-a-time track stage.
    low_score = second_pass_score(job)
    kept, low = filter_with_low(det, mapped, s.confidence, s.iou_threshold, s.class_agnostic_nms, low_score)
    meta = {"dropped_unmapped": dropped}
    if low_score is not None:
        meta.update(low=low.tolist(), low_score=low_score)
    save_indices(kept, path, meta=meta)
    return StageOutput(str(path), key, False, dropped_unmapped=dropped)


def _unmapped(det: Detections, confidence: float, mapped: np.ndarray) -> int:
    return int(((det.score >= confidence) & ~mapped).sum())
