"""Stage 6, persist: one Parquet file of the label table per frame range, atomically."""

from __future__ import annotations


import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from segflow.review import review_rows
from segflow.storage.fs import num_rows
from segflow.storage.table import labels_meta, load_indices, load_instances, write_labels
from segflow.contracts import Detections, FrameRange, Polygons, StageOutput, VideoInfo
from segflow.ops.tracker import object_ids


def label_columns(
    det: Detections, polys: Polygons, track_ids: np.ndarray, video: VideoInfo, classes: list[str],
    feature_hashes: list[str], tracking: bool, model_id: str, params_hash: str,
    thresholds: tuple[float, float] = (0.6, 0.3), frames: range | None = None,
) -> dict:
    """The label table's columns for one range (see LABEL_SCHEMA). `review_priority` is
    measured against `thresholds` (confidence, NMS IoU) over this range's `frames`."""
    n = len(det)
    boxes = det.boxes.reshape(-1, 4)
    columns = {
        "source": [video.source] * n,
        "video_id": [video.video_id] * n,
        "frame": det.frame.astype(np.int32),
        "timestamp_s": det.timestamp.astype(np.float64),
        "object_id": object_ids(video.video_id, det.frame, track_ids, tracking),
        "track_id": track_ids.astype(np.int64) if tracking else [None] * n,
        "class_name": classes,
        "feature_hash": feature_hashes,
        "confidence": det.score.astype(np.float32),
        "x0": boxes[:, 0], "y0": boxes[:, 1], "x1": boxes[:, 2], "y1": boxes[:, 3],
        "geometry": polys.wkb,
        "vertex_count": polys.vertex_count.astype(np.int32),
        "area_px": polys.area.astype(np.float64),
        "width": np.full(n, video.width, np.int32),
        "height": np.full(n, video.height, np.int32),
        "model_id": [model_id] * n,
        "params_hash": [params_hash] * n,
    }
    window = {video.video_id: np.asarray(frames)} if frames is not None else None
    review = review_rows(pd.DataFrame(columns), *thresholds, frames=window, open_ends=True)
    return columns | {"review_priority": review["priority"].to_numpy(np.float32)}


def file_meta(job, video: VideoInfo, rng: FrameRange) -> dict:
    """What a finished label file records about how it was made."""
    return {"params_hash": job.params_hash, "source": video.source, "start": rng.start, "end": rng.end}


def is_persisted(job, video: VideoInfo, rng: FrameRange) -> bool:
    """Whether this range's label file exists and was made with these exact settings."""
    return labels_meta(job.layout.labels(video.video_id, rng)) == file_meta(job, video, rng)


@task(name="persist", cache_policy=NO_CACHE)
def persist_task(
    job, videos: list[VideoInfo], ranges: list[FrameRange], raw: list[StageOutput], kept: list[StageOutput],
    polys: list[StageOutput], tracks: list[StageOutput],
) -> list[StageOutput]:
    """`persist_range` over ranges (`videos[i]`'s `ranges[i]`: one task run for all that are ready)."""
    return [persist_range(job, *args) for args in zip(videos, ranges, raw, kept, polys, tracks)]


def persist_range(
    job, video: VideoInfo, rng: FrameRange, raw: StageOutput, kept: StageOutput, polys: StageOutput, track: StageOutput
) -> StageOutput:
    """Write one range of the label table unless an identical one is already there."""
    path = job.layout.labels(video.video_id, rng)
    if is_persisted(job, video, rng):
        return StageOutput(str(path), job.params_hash, True)
    det, poly = load_instances(raw.file, kept.file, polys.file)
    classes = [job.class_name(int(label)) for label in det.label]
    hashes = [job.ontology.objects[c].feature_hash for c in classes]
    columns = label_columns(
        det, poly, load_indices(track.file), video, classes, hashes,
        job.settings.tracking, job.model.model_id, job.params_hash,
        (job.settings.confidence, job.settings.iou_threshold), range(rng.start, rng.end + 1),
    )
    write_labels(columns, path, file_meta(job, video, rng))
    return StageOutput(str(path), job.params_hash, False)


def remove_stale(job, video: VideoInfo, ranges: list[FrameRange]) -> int:
    """Delete this input's label files from earlier plans (other ranges); returns how many."""
    keep = {job.layout.labels(video.video_id, r).name for r in ranges}
    stale = [p for p in job.layout.video_dir(video.video_id).glob("*.parquet") if p.name not in keep]
    for p in stale:
        p.unlink()
    return len(stale)


def count_rows(job, video: VideoInfo, ranges: list[FrameRange]) -> int:
    """Instances in this input's label files (read from the Parquet footers only)."""
    paths = [job.layout.labels(video.video_id, r) for r in ranges]
    return sum(num_rows(p) for p in paths if p.exists())
