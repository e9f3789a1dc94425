"""Stage 5, track: give every kept instance an identity that survives a whole video.

Tracking off: each instance on each frame is its own object (track id 0). Tracking on,
the ids come from `segflow.ops.tracker` (the algorithm, pure numpy); this module reads
a range's detections, carries the tracker's state from range to range through the
cache and writes the ids.
"""

from __future__ import annotations

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from segflow.ops.tracker import TRACKER_VERSION, Tracker, TrackerConfig, assign_ids
from segflow.storage.keys import key_of
from segflow.storage.table import (
    indices_meta, instances_of, load_detections, load_tracker_state, save_indices,
)
from segflow.contracts import FrameRange, StageOutput, VideoInfo


# LabelSettings field -> TrackerConfig field (CLI flags: --track-buffer, --match-iou,
# --min-track-length, --track-low-score, --reid-gate, --track-class-penalty; the
# `class_penalty` property resolves the last one by NMS mode when it is not given).
SETTING_FIELDS = {
    "track_buffer": "track_buffer",
    "match_iou": "match_iou",
    "min_track_length": "min_track_length",
    "track_low_score": "low_score",
    "reid_gate": "reid_gate",
    "class_penalty": "class_penalty",
}


def tracker_config(settings) -> TrackerConfig:
    """The TrackerConfig of a run's settings; knobs the settings do not have keep their default."""
    return TrackerConfig(**{field: getattr(settings, name) for name, field in SETTING_FIELDS.items()
                            if hasattr(settings, name)})


def range_key(job, rng: FrameRange, raw: StageOutput, polys: StageOutput, previous: StageOutput | None) -> str:
    """A range's track-id key: its inputs, the tracker settings and the previous range's
    key (a range's ids depend on every range before it)."""
    s = job.settings
    config = tracker_config(s)
    ident = (TRACKER_VERSION, s.tracking, *vars(config).values()) if s.tracking else (False,)
    second = (s.confidence, s.iou_threshold, s.class_agnostic_nms)
    prev = previous.key if previous is not None else None
    return key_of("track", prev, polys.members, raw.key if s.tracking else None, rng.start, ident, second)


def track_location(job, video: VideoInfo, rng: FrameRange, raw: StageOutput, polys: StageOutput,
                   previous: StageOutput | None) -> tuple[str, object]:
    """The cache key and path of a range's track ids, following `previous`."""
    key = range_key(job, rng, raw, polys, previous)
    return key, job.layout.cache("track", video.video_id, rng, key)


def cached_track(job, video: VideoInfo, rng: FrameRange, raw: StageOutput, polys: StageOutput,
                 previous: StageOutput | None) -> StageOutput | None:
    """The range's track ids when they are cached already (after `previous`), else None."""
    key, path = track_location(job, video, rng, raw, polys, previous)
    return StageOutput(str(path), key, True) if path.exists() else None


def track_range(job, rng: FrameRange, raw: StageOutput, kept: StageOutput, polys: StageOutput,
                tracker: Tracker | None) -> np.ndarray:
    """Track ids of one range's kept instances, advancing `tracker` (None: tracking off)."""
    from segflow.tasks.filter import filter_with_low, mapped_labels

    s = job.settings
    allraw = load_detections(raw.file)
    det, _ = instances_of(allraw, kept.file, polys.file)
    low_f = low_l = None
    low_r: list[dict] = []
    if tracker is not None:
        meta = indices_meta(kept.file) or {}
        if meta.get("low_score") == tracker.config.low_score:  # found by the filter stage
            lo = np.asarray(meta["low"], np.int64)
        else:
            mapped = np.isin(allraw.label, mapped_labels(job))
            lo = filter_with_low(allraw, mapped, s.confidence, s.iou_threshold, s.class_agnostic_nms,
                                 tracker.config.low_score)[1]
        low_f, low_l, low_r = allraw.frame[lo], allraw.label[lo], [allraw.rles[i] for i in lo]
    return assign_ids(det.frame, det.label, det.rles, tracker, low_f, low_l, low_r)


@task(name="track", cache_policy=NO_CACHE)
def track_task(
    job, videos: list[VideoInfo], ranges: list[FrameRange], raw: list[StageOutput], kept: list[StageOutput],
    polys: list[StageOutput], previous: StageOutput | None,
) -> list[StageOutput]:
    """Track ids for consecutive ranges (`videos[i]`'s `ranges[i]`), continuing the tracks
    of the `previous` range; each new input (a group's next image) starts afresh.

    The flow hands each range over as soon as its polygons are done (on a first run one
    at a time, so tracking keeps up with the model instead of starting when it ends; on
    a rerun all at once). Each ids file carries the tracker's state after its range
    (plain JSON in the Parquet footer), so the next range, a resumed run or a rerun
    continues from it without replaying the input from the start.
    """
    config = tracker_config(job.settings)
    out: list[StageOutput] = []
    tracker = None
    for i, (video, rng, r, k, p) in enumerate(zip(videos, ranges, raw, kept, polys)):
        if i and video.video_id != videos[i - 1].video_id:
            previous = tracker = None
        key, path = track_location(job, video, rng, r, p, previous)
        cached = path.exists()
        if cached:
            tracker = None  # a later range carries on from the state stored in this file
        else:
            if tracker is None and job.settings.tracking:
                tracker = _continuing(config, previous)
            ids = track_range(job, rng, r, k, p, tracker)
            save_indices(ids, path, tracker.state() if tracker is not None else None)
        previous = StageOutput(str(path), key, cached)
        out.append(previous)
    return out


def _continuing(config: TrackerConfig, previous: StageOutput | None) -> Tracker:
    """A tracker carrying on from the state stored with `previous` (a new one at the start)."""
    if previous is None:
        return Tracker(config)
    state = load_tracker_state(previous.file)
    if state is None:  # every ids file made with tracking on has one
        raise RuntimeError(f"{previous.path}: no tracker state to continue from")
    return Tracker.from_state(config, state)
