"""Stage 6, persist: one Parquet file of the label table per frame range, atomically."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import shapely
from prefect import task
from prefect.cache_policies import NO_CACHE

from segflow.review import review_rows
from segflow.contracts import Detections, FrameRange, Polygons, StageOutput, VideoInfo
from segflow.media import times_of
from segflow.ops.tracker import object_ids
from segflow.ops.vote import class_tally, merge_tallies, vote
from segflow.storage.fs import num_rows
from segflow.storage.table import labels_meta, load_indices, load_instances, load_vote_inputs, write_labels

TABLE_VERSION = 2  # in each file's footer: a file of an older table layout is written again
Parts = tuple[StageOutput, StageOutput, StageOutput, StageOutput]  # a range's raw, kept, polygons, track ids


def label_columns(
    det: Detections, polys: Polygons, track_ids: np.ndarray, video: VideoInfo, classes: list[str],
    frame_classes: list[str], feature_hashes: list[str], timestamps: np.ndarray, tracking: bool,
    model_id: str, params_hash: str, thresholds: tuple[float, float] = (0.6, 0.3), frames: range | None = None,
) -> dict:
    """The label table's columns for one range (see LABEL_SCHEMA).

    `classes` is each row's object class (one per object_id, voted over its track),
    `frame_classes` the model's class on that frame; the box is the tight box of the
    row's geometry (the detector's box only for an empty geometry). `review_priority` is
    measured against `thresholds` (confidence, NMS IoU) over this range's `frames`."""
    n = len(det)
    boxes = geometry_boxes(polys.wkb, det.boxes.reshape(-1, 4))
    columns = {
        "source": [video.source] * n,
        "video_id": [video.video_id] * n,
        "frame": det.frame.astype(np.int32),
        "timestamp_s": np.asarray(timestamps, np.float64),
        "object_id": object_ids(video.video_id, det.frame, track_ids, tracking),
        "track_id": track_ids.astype(np.int64) if tracking else [None] * n,
        "class_name": classes,
        "feature_hash": feature_hashes,
        "frame_class_name": frame_classes,
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


def geometry_boxes(wkb: list[bytes], fallback: np.ndarray) -> np.ndarray:
    """(N, 4) float32 x0, y0, x1, y1: the bounds of each WKB geometry (pixel corners,
    pixel (r, c) = [c, c+1] x [r, r+1]); `fallback` ((N, 4)) where a geometry is empty."""
    if not wkb:
        return np.zeros((0, 4), np.float32)
    bounds = shapely.bounds(shapely.from_wkb(wkb))
    empty = np.isnan(bounds).any(axis=1)
    bounds[empty] = np.asarray(fallback, np.float64)[empty]
    return bounds.astype(np.float32)


def file_meta(job, video: VideoInfo, rng: FrameRange) -> dict:
    """What a finished label file records about how it was made, and which frames it
    covers (`start`..`end`, inclusive, with or without instances)."""
    return {"params_hash": job.params_hash, "source": video.source, "video_id": video.video_id,
            "start": rng.start, "end": rng.end, "table_version": TABLE_VERSION}


def is_persisted(job, video: VideoInfo, rng: FrameRange) -> bool:
    """Whether this range's label file exists and was made with these exact settings."""
    return labels_meta(job.layout.labels(video.video_id, rng)) == file_meta(job, video, rng)


@task(name="persist", cache_policy=NO_CACHE)
def persist_task(
    job, videos: list[VideoInfo], ranges: list[FrameRange], raw: list[StageOutput], kept: list[StageOutput],
    polys: list[StageOutput], tracks: list[StageOutput], whole: dict[str, list[Parts]],
) -> list[StageOutput]:
    """`persist_range` over ranges (`videos[i]`'s `ranges[i]`: one task run for all that
    are ready); `whole[video_id]` is every range of that input, tracked to its end."""
    return [persist_range(job, v, *args, whole[v.video_id]) for v, *args in zip(videos, ranges, raw, kept, polys, tracks)]


def persist_range(
    job, video: VideoInfo, rng: FrameRange, raw: StageOutput, kept: StageOutput, polys: StageOutput,
    track: StageOutput, whole: list[Parts],
) -> StageOutput:
    """Write one range of the label table unless an identical one is already there.

    Called only once the input's every range is tracked (`whole`): each object's class
    is voted over its whole track, so no two files of an input can disagree about an
    object, and a resumed run writes the files it lacks with the same vote.
    """
    path = job.layout.labels(video.video_id, rng)
    if is_persisted(job, video, rng):
        return StageOutput(str(path), job.params_hash, True)
    det, poly = load_instances(raw.file, kept.file, polys.file)
    track_ids = load_indices(track.file)
    frame_classes = [job.class_name(int(label)) for label in det.label]
    winners = track_votes(tuple(whole)) if job.settings.tracking and video.kind == "video" else {}
    classes = [job.class_name(winners.get(int(t), int(label))) for t, label in zip(track_ids, det.label)]
    hashes = [job.ontology.objects[c].feature_hash for c in classes]
    times = det.timestamp if video.kind == "image" else times_of(
        video.local or video.source, video.frame_count, det.frame, det.timestamp)
    columns = label_columns(
        det, poly, track_ids, video, classes, frame_classes, hashes, times,
        job.settings.tracking, job.model.model_id, job.params_hash,
        (job.settings.confidence, job.settings.iou_threshold), range(rng.start, rng.end + 1),
    )
    write_labels(columns, path, file_meta(job, video, rng))
    return StageOutput(str(path), job.params_hash, False)


@functools.lru_cache(maxsize=16)
def track_votes(whole: tuple[Parts, ...]) -> dict[int, int]:
    """track id -> model label voted over every range of an input (score-weighted; see
    `segflow.ops.vote`). Kept per input's stage outputs (content-keyed), so the tasks
    persisting an input's ranges read its small columns once."""
    tallies = [class_tally(ids, labels, scores) for labels, scores, ids in
               (load_vote_inputs(r.file, k.file, p.file, t.file) for r, k, p, t in whole)]
    return vote(merge_tallies(tallies))


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
