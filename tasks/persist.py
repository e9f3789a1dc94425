"""Stage 6, persist: one Parquet file of the label table per frame range, atomically."""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import shapely
from prefect import task
from prefect.cache_policies import NO_CACHE

from segflow.contracts import Detections, Polygons, StageOutput, StageSpec, VideoInfo, Work
from segflow.media import times_of
from segflow.ops.tracker import TRACKER_VERSION, merge_lengths, object_ids, short_tracks, track_lengths
from segflow.ops.vote import class_tally, merge_tallies, vote
from segflow.review import review_rows
from segflow.storage.housekeeping import CACHE_KEY, cache_names
from segflow.storage.table import (
    LABEL_POLYGONS_KEY, labels_meta, load_indices, load_instances, load_vote_inputs, polygons_meta, write_labels,
)

TABLE_VERSION = 2  # in each file's footer: a file of an older table layout is written again
Parts = tuple[StageOutput, StageOutput, StageOutput, StageOutput]  # a range's raw, kept, polygons, track ids


def label_columns(
    det: Detections, polys: Polygons, track_ids: np.ndarray, video: VideoInfo, classes: list[str],
    frame_classes: list[str], feature_hashes: list[str], timestamps: np.ndarray, tracking: bool,
    model_id: str, params_hash: str, thresholds: tuple[float, float], frames: range | None = None,
) -> dict:
    """The label table's columns for one range (see LABEL_SCHEMA).

    `classes` is each row's object class (one per object_id, voted over its track),
    `frame_classes` the model's class on that frame; the box is the tight box of the
    row's geometry (the detector's box only for an empty geometry). `review_priority` is
    measured against `thresholds` (confidence, NMS IoU) over this range's `frames`."""
    n = len(det)
    ident = {
        "source": [video.source] * n,
        "video_id": [video.video_id] * n,
        "object_id": object_ids(video.video_id, det.frame, track_ids, tracking),
        "width": np.full(n, video.width, np.int32),
        "height": np.full(n, video.height, np.int32),
    }
    window = {video.video_id: np.asarray(frames)} if frames is not None else None
    return _columns(det, polys, track_ids, ident, classes, frame_classes, feature_hashes, timestamps, tracking,
                    model_id, params_hash, thresholds, window)


def shard_columns(
    det: Detections, polys: Polygons, track_ids: np.ndarray, members: tuple[VideoInfo, ...], classes: list[str],
    frame_classes: list[str], feature_hashes: list[str], tracking: bool, model_id: str, params_hash: str,
    thresholds: tuple[float, float],
) -> dict:
    """`label_columns` of a shard's rows (`det.frame` i: member i), each row as its image's
    own (frame 0, its source, video_id, size and object ids): the rows labeling each image
    alone gives, computed together."""
    n, member = len(det), np.asarray(det.frame, np.int64)
    zeros = np.zeros(n, np.int64)
    oids = [""] * n
    for i in np.unique(member):
        rows = np.flatnonzero(member == i)
        for r, oid in zip(rows, object_ids(members[i].video_id, zeros[rows], track_ids[rows], tracking)):
            oids[r] = oid
    ident = {
        "source": [members[i].source for i in member],
        "video_id": [members[i].video_id for i in member],
        "object_id": oids,
        "width": np.asarray([members[i].width for i in member], np.int32),
        "height": np.asarray([members[i].height for i in member], np.int32),
    }
    window = {members[i].video_id: np.zeros(1, np.int64) for i in np.unique(member)}
    return _columns(replace(det, frame=zeros), polys, track_ids, ident, classes, frame_classes, feature_hashes,
                    np.zeros(n), tracking, model_id, params_hash, thresholds, window)


def _columns(det: Detections, polys: Polygons, track_ids: np.ndarray, ident: dict, classes: list[str],
             frame_classes: list[str], feature_hashes: list[str], timestamps: np.ndarray, tracking: bool,
             model_id: str, params_hash: str, thresholds: tuple[float, float], window: dict | None) -> dict:
    """The columns of rows whose identity columns (`ident`: source, video_id, object_id,
    width, height) are given; `review_priority` over each video_id's `window` of frames."""
    n = len(det)
    boxes = geometry_boxes(polys.wkb, det.boxes.reshape(-1, 4))
    columns = {
        "source": ident["source"],
        "video_id": ident["video_id"],
        "frame": det.frame.astype(np.int32),
        "timestamp_s": np.asarray(timestamps, np.float64),
        "object_id": ident["object_id"],
        "track_id": track_ids.astype(np.int64) if tracking else [None] * n,
        "class_name": classes,
        "feature_hash": feature_hashes,
        "frame_class_name": frame_classes,
        "confidence": det.score.astype(np.float32),
        "x0": boxes[:, 0], "y0": boxes[:, 1], "x1": boxes[:, 2], "y1": boxes[:, 3],
        "geometry": polys.wkb,
        "vertex_count": polys.vertex_count.astype(np.int32),
        "area_px": polys.area.astype(np.float64),
        "width": ident["width"],
        "height": ident["height"],
        "model_id": [model_id] * n,
        "params_hash": [params_hash] * n,
    }
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


@dataclass(frozen=True)
class PersistConfig:
    """What the persist stage needs of a job: what every row records about the run."""

    params_hash: str  # of every setting that shapes a row
    model_id: str
    tracking: bool
    classes: tuple[str, ...]  # model label i + 1 -> classes[i]
    feature_hashes: dict  # class name -> the ontology's feature hash
    thresholds: tuple[float, float]  # (confidence, NMS IoU) that `review_priority` is measured against
    min_track_length: int  # tracks seen on fewer frames are left out (see `short_tracks`)
    frames: tuple[int, int | None]  # the labeled frames of a video (None: to its last)


def persist_config(job) -> PersistConfig:
    hashes = {name: obj.feature_hash for name, obj in job.ontology.objects.items()}
    s = job.settings
    return PersistConfig(job.params_hash, job.model.model_id, s.tracking, tuple(job.model.classes), hashes,
                         (s.confidence, s.iou_threshold), s.min_track_length, (s.start_frame, s.end_frame))


def file_meta(config: PersistConfig, work: Work) -> dict:
    """What a finished label file records about how it was made, and which frames it
    covers (`start`..`end`, inclusive, with or without instances); a shard's, which
    images (`members`: [video_id, source] each, frame 0 of each). With tracking on, the
    tracker's version too: a label file of an older tracker is written again (its ids
    may differ), as its track stage's cache is (keyed by the same version)."""
    made = {"tracker": TRACKER_VERSION} if config.tracking else {}
    if work.video.kind == "shard":
        return {"params_hash": config.params_hash, "shard": work.video.video_id, "table_version": TABLE_VERSION,
                "members": [[m.video_id, m.source] for m in work.video.members]} | made
    return {"params_hash": config.params_hash, "source": work.video.source, "video_id": work.video.video_id,
            "start": work.rng.start, "end": work.rng.end, "table_version": TABLE_VERSION} | made


def cached_labels(config: PersistConfig, work: Work) -> StageOutput | None:
    """The range's label file when it exists and was made with these exact settings, else None
    (the cache files it was made from, also in its footer, are not compared)."""
    meta = labels_meta(work.file)
    if meta is not None:
        meta.pop(CACHE_KEY, None)
        meta.pop(LABEL_POLYGONS_KEY, None)
    return StageOutput(work.path, work.key, True) if meta == file_meta(config, work) else None


def made_from(config: PersistConfig, work: Work, raw_index: np.ndarray | None = None) -> dict:
    """`file_meta` and the cache files the label file is made from (`CACHE_KEY`: what
    pruning keeps, `segflow.storage.housekeeping`). A shard's label file is its polygon
    cache (polygonize's `shard_cache_in_labels`): its footer names no polygon file (pruned
    once it is written) and holds the polygon file's footer with each row's raw position
    (`raw_index`), from which a rerun reuses the polygons."""
    if work.video.kind != "shard":
        return file_meta(config, work) | {CACHE_KEY: cache_names([work.raw, work.kept, work.polys, work.track])}
    polys = polygons_meta(work.polys.file)
    own = {LABEL_POLYGONS_KEY: {**polys, "raw_index": [int(i) for i in raw_index]}} if polys and raw_index is not None else {}
    return file_meta(config, work) | {CACHE_KEY: cache_names([work.raw, work.kept, work.track])} | own


@task(name="persist", cache_policy=NO_CACHE)
def persist_task(config: PersistConfig, works: list[Work]) -> list[StageOutput]:
    """`persist_range` over ranges (one task run for all that are ready)."""
    return [persist_range(config, w) for w in works]


def persist_range(config: PersistConfig, work: Work) -> StageOutput:
    """Write one range of the label table to `work.path` (atomically).

    Called only once the input's every range is tracked (`work.whole`): each object's
    class is voted over its whole track, so no two files of an input can disagree about
    an object, and a resumed run writes the files it lacks with the same vote. Tracks
    seen on fewer than `min_track_length` frames of a video are left out (`short_tracks`).
    """
    video, rng = work.video, work.rng
    det, poly = load_instances(work.raw.file, work.kept.file, work.polys.file)
    track_ids = load_indices(work.track.file)
    winners, lengths = track_votes(work.whole) if config.tracking and video.kind == "video" else ({}, {})
    first, last = config.frames[0], video.frame_count - 1 if config.frames[1] is None else config.frames[1]
    drop = short_tracks(lengths, config.min_track_length, first, min(last, video.frame_count - 1))
    if drop:
        keep = np.flatnonzero(~np.isin(track_ids, np.fromiter(drop, np.int64)))
        det, track_ids = det.take(keep), track_ids[keep]
        poly = Polygons(poly.index[keep], [poly.wkb[i] for i in keep], poly.vertex_count[keep], poly.area[keep])
    frame_classes = [class_name(config, int(label)) for label in det.label]
    if video.kind == "shard":  # images: one class per object already (each object is on one image)
        hashes = [config.feature_hashes[c] for c in frame_classes]
        columns = shard_columns(det, poly, track_ids, video.members, frame_classes, frame_classes, hashes,
                                config.tracking, config.model_id, config.params_hash, config.thresholds)
        raw_index = load_indices(work.kept.file)[poly.index]  # each row's raw position
        write_labels(columns, work.file, made_from(config, work, raw_index))
        return StageOutput(work.path, work.key, False)
    classes = [class_name(config, winners.get(int(t), int(label))) for t, label in zip(track_ids, det.label)]
    hashes = [config.feature_hashes[c] for c in classes]
    times = det.timestamp if video.kind == "image" else times_of(
        video.local or video.source, video.frame_count, det.frame, det.timestamp)
    columns = label_columns(
        det, poly, track_ids, video, classes, frame_classes, hashes, times, config.tracking, config.model_id,
        config.params_hash, config.thresholds, range(rng.start, rng.end + 1),
    )
    write_labels(columns, work.file, made_from(config, work))
    return StageOutput(work.path, work.key, False)


def class_name(config: PersistConfig, label: int) -> str | None:
    """The class of a model label (1..K), None for any other."""
    return config.classes[label - 1] if 1 <= label <= len(config.classes) else None


@functools.lru_cache(maxsize=16)
def track_votes(whole: tuple[Parts, ...]) -> tuple[dict[int, int], dict[int, tuple[int, int, int]]]:
    """track id -> model label voted over every range of an input (score-weighted; see
    `segflow.ops.vote`), and track id -> (frames seen on, first, last frame). Kept per
    input's stage outputs (content-keyed), so the tasks persisting an input's ranges read
    its small columns once."""
    parts = [load_vote_inputs(r.file, k.file, p.file, t.file) for r, k, p, t in whole]
    tallies = [class_tally(ids, labels, scores) for labels, scores, ids, _ in parts]
    return vote(merge_tallies(tallies)), merge_lengths([track_lengths(ids, frames) for _, _, ids, frames in parts])


STAGE = StageSpec(
    name="labels", task=persist_task, config=persist_config, key=lambda config, work: config.params_hash,
    where=lambda layout, work: layout.label_file(work.video, work.rng), cached=cached_labels,
    reads=("raw", "kept", "polys", "track"), tasks_in_flight=2, whole_input=True,
)
"""Two task runs side by side, each holding one range's detections and rows at a time;
a range starts once its whole input is tracked (an object's class is voted over its track)."""
