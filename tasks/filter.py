"""Stage 3, filter: confidence threshold, then greedy mask-IoU NMS per frame."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from segflow.contracts import Detections, StageOutput, StageSpec, Work
from segflow.ops.nms import filter_with_low
from segflow.storage.keys import key_of
from segflow.storage.table import indices_meta, load_detections, save_indices


# ---- the stage ------------------------------------------------------------------


@dataclass(frozen=True)
class FilterConfig:
    """What the filter stage needs of a job."""

    confidence: float
    iou_threshold: float
    class_agnostic_nms: bool
    ontology_digest: str
    mapped: tuple[int, ...]  # model labels whose class the ontology maps (the others are dropped)
    low_score: float | None  # the tracker's second-pass score, None when tracking is off


def filter_config(job) -> FilterConfig:
    s = job.settings
    return FilterConfig(s.confidence, s.iou_threshold, s.class_agnostic_nms, job.ontology.digest, job.mapped_labels,
                        s.track_low_score if s.tracking else None)


def kept_key(config: FilterConfig, work: Work) -> str:
    """Cache key of a range's kept indices. Not keyed by the tracker's low score: the
    second-pass candidates stored beside them say which score they are for (the track
    stage finds them itself for another), so tracking settings never make the kept set,
    and the polygons after it, be redone."""
    c = config
    return key_of("kept", work.raw.key, c.confidence, c.iou_threshold, c.class_agnostic_nms, c.ontology_digest)


def cached_kept(config: FilterConfig, work: Work) -> StageOutput | None:
    """The range's kept indices when they are cached already (with their counts), else None."""
    meta = indices_meta(work.file) if work.file.exists() else None
    if meta is None or "dropped_unmapped" not in meta:
        return None
    return StageOutput(work.path, work.key, True, dropped_unmapped=int(meta["dropped_unmapped"]),
                       per_member=tuple(meta.get("dropped_by_member", ())))


@task(name="filter", cache_policy=NO_CACHE)
def filter_task(config: FilterConfig, works: list[Work]) -> list[StageOutput]:
    """`filter_range` over ranges (one task run for all that are ready)."""
    return [filter_range(config, w) for w in works]


def filter_range(config: FilterConfig, work: Work) -> StageOutput:
    """Confidence + NMS + ontology mapping over one range's raw output, saved to `work.path`."""
    c = config
    det = load_detections(work.raw.file)
    mapped = np.isin(det.label, np.asarray(c.mapped, np.int64))
    dropped = _unmapped(det, c.confidence, mapped)
    # A shard's images each count theirs (frame i is member i).
    by_member = _unmapped_by_frame(det, c.confidence, mapped, work.video.frame_count) if work.video.kind == "shard" else ()
    if work.file.exists():
        return StageOutput(work.path, work.key, True, dropped_unmapped=dropped, per_member=by_member)
    # The tracker's low-score candidates come out of the same NMS: computed here, beside
    # the other ranges, rather than in the one-range-at-a-time track stage.
    kept, low = filter_with_low(det, mapped, c.confidence, c.iou_threshold, c.class_agnostic_nms, c.low_score)
    meta = {"dropped_unmapped": dropped}
    if by_member:
        meta["dropped_by_member"] = list(by_member)
    if c.low_score is not None:
        meta.update(low=low.tolist(), low_score=c.low_score)
    save_indices(kept, work.file, meta=meta)
    return StageOutput(work.path, work.key, False, dropped_unmapped=dropped, per_member=by_member)


def _unmapped(det: Detections, confidence: float, mapped: np.ndarray) -> int:
    return int(((det.score >= confidence) & ~mapped).sum())


def _unmapped_by_frame(det: Detections, confidence: float, mapped: np.ndarray, frames: int) -> tuple[int, ...]:
    return tuple(int(n) for n in np.bincount(det.frame[(det.score >= confidence) & ~mapped], minlength=frames))


STAGE = StageSpec(
    name="kept", task=filter_task, config=filter_config, key=kept_key, cached=cached_kept, reads=("raw",),
    where=lambda layout, work: layout.stage_file("kept", work.video, work.rng, work.key),
    ranges_ahead=4, counts_progress=True,
)
"""Up to 4 full ranges' frames per task run, and at most 4 ranges' frames filtered ahead
of polygonize (a range's kept set is small, its raw output is not)."""
