"""Stage 5, track: give every kept instance an identity that survives a whole video.

Tracking off: each instance on each frame is its own object (track id 0). Tracking on,
the ids come from `segflow.ops.tracker` (the algorithm, pure numpy); this module reads
a range's detections, carries the tracker's state from range to range through the
cache and writes the ids.
"""

from __future__ import annotations

import importlib
import sys
import threading
from dataclasses import dataclass

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from segflow.ops.nms import filter_with_low
from segflow.ops.shots import cut_frames
from segflow.ops.tracker import TRACKER_VERSION, Tracker, TrackerConfig, assign_ids
from segflow.storage.keys import key_of
from segflow.contracts import StageOutput, StageSpec, Work
from segflow.storage.table import indices_meta, instances_of, load_detections, load_tracker_state, save_indices


# LabelSettings field -> TrackerConfig field (CLI flags: --track-buffer, --match-iou,
# --track-low-score, --reid-gate, --track-class-penalty; the `class_penalty` property
# resolves the last one by NMS mode when it is not given). --min-track-length is the
# persist stage's: it leaves short tracks out of the table, the ids stay as they are.
SETTING_FIELDS = {
    "track_buffer": "track_buffer",
    "match_iou": "match_iou",
    "track_low_score": "low_score",
    "reid_gate": "reid_gate",
    "class_penalty": "class_penalty",
}


def tracker_config(settings) -> TrackerConfig:
    """The TrackerConfig of a run's settings; knobs the settings do not have keep their default."""
    return TrackerConfig(**{field: getattr(settings, name) for name, field in SETTING_FIELDS.items()
                            if hasattr(settings, name)})


@dataclass(frozen=True)
class TrackConfig:
    """What the track stage needs of a job: the tracker's settings, and the filter's (its
    second pass filters the raw output down to `tracker.low_score` itself when the
    filter stage stored candidates for another score)."""

    tracking: bool
    tracker: TrackerConfig
    confidence: float
    iou_threshold: float
    class_agnostic_nms: bool
    mapped: tuple[int, ...]  # model labels whose class the ontology maps


def track_config(job) -> TrackConfig:
    s = job.settings
    return TrackConfig(s.tracking, tracker_config(s), s.confidence, s.iou_threshold, s.class_agnostic_nms,
                       job.mapped_labels)


def track_key(config: TrackConfig, work: Work) -> str:
    """A range's track-id key: its inputs, the tracker settings and the previous range's
    key (a range's ids depend on every range before it)."""
    c = config
    ident = (TRACKER_VERSION, c.tracking, *vars(c.tracker).values()) if c.tracking else (False,)
    second = (c.confidence, c.iou_threshold, c.class_agnostic_nms)
    prev = work.previous.key if work.previous is not None else None
    return key_of("track", prev, work.polys.members, work.raw.key if c.tracking else None, work.rng.start, ident, second)


def cached_track(config: TrackConfig, work: Work) -> StageOutput | None:
    """The range's track ids when they are cached already (after `work.previous`), else None."""
    return StageOutput(work.path, work.key, True) if work.file.exists() else None


def track_range(config: TrackConfig, work: Work, tracker: Tracker | None,
                shot: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Track ids of one range's kept instances, advancing `tracker` (None: tracking off),
    and the thumbnail of the range's last frame (None: none kept).

    Tracks end at the shot cuts found on the range's frame thumbnails (`cut_frames`;
    `shot`: the thumbnail of the frame before the range, from the previous range)."""
    c = config
    allraw = load_detections(work.raw.file)
    det, _ = instances_of(allraw, work.kept.file, work.polys.file)
    thumbs = allraw.thumbs
    last = None if thumbs is None or len(thumbs.frame) == 0 else thumbs.hsv[-1]
    cuts = None
    if tracker is not None and thumbs is not None:
        cuts = cut_frames(thumbs.frame, thumbs.hsv, shot, tracker.config.cut_threshold)
    low_f = low_l = low_c = None
    low_r: list[dict] = []
    if tracker is not None:
        meta = indices_meta(work.kept.file) or {}
        if meta.get("low_score") == tracker.config.low_score:  # found by the filter stage
            lo = np.asarray(meta["low"], np.int64)
        else:
            mapped = np.isin(allraw.label, np.asarray(c.mapped, np.int64))
            lo = filter_with_low(allraw, mapped, c.confidence, c.iou_threshold, c.class_agnostic_nms,
                                 tracker.config.low_score)[1]
        low_f, low_l, low_r = allraw.frame[lo], allraw.label[lo], [allraw.rles[i] for i in lo]
        low_c = None if allraw.color is None else allraw.color[lo]
    return assign_ids(det.frame, det.label, det.rles, tracker, low_f, low_l, low_r, det.color, low_c, cuts), last


def track_shard(config: TrackConfig, work: Work) -> np.ndarray:
    """Track ids of a shard's kept instances: each image (frame i = member i) tracked on
    its own by a fresh tracker, as a one-frame input (frame 0) is."""
    c = config
    allraw = load_detections(work.raw.file)
    det, _ = instances_of(allraw, work.kept.file, work.polys.file)
    if not c.tracking:
        return assign_ids(det.frame, det.label, det.rles, None)
    meta = indices_meta(work.kept.file) or {}
    if meta.get("low_score") == c.tracker.low_score:  # found by the filter stage
        lo = np.asarray(meta["low"], np.int64)
    else:
        mapped = np.isin(allraw.label, np.asarray(c.mapped, np.int64))
        lo = filter_with_low(allraw, mapped, c.confidence, c.iou_threshold, c.class_agnostic_nms, c.tracker.low_score)[1]
    ids = np.zeros(len(det), np.int64)
    low_frame = allraw.frame[lo]
    for m in np.unique(det.frame):
        rows, low = np.flatnonzero(det.frame == m), lo[low_frame == m]
        ids[rows] = assign_ids(np.zeros(len(rows), np.int64), det.label[rows], [det.rles[r] for r in rows],
                               Tracker(c.tracker), np.zeros(len(low), np.int64), allraw.label[low],
                               [allraw.rles[r] for r in low], None if det.color is None else det.color[rows],
                               None if allraw.color is None else allraw.color[low])
    return ids


@task(name="track", cache_policy=NO_CACHE)
def track_task(config: TrackConfig, works: list[Work]) -> list[StageOutput]:
    """Track ids for consecutive ranges, continuing the tracks of the first one's
    `previous` range; each new input (a group's next image) starts afresh.

    The pipeline hands each range over as soon as its polygons are done (on a first run
    one at a time, so tracking keeps up with the model instead of starting when it ends;
    on a rerun all at once). Each ids file carries the tracker's state after its range
    (plain JSON in the Parquet footer), so the next range, a resumed run or a rerun
    continues from it without replaying the input from the start.
    """
    out: list[StageOutput] = []
    tracker = shot = None
    for i, work in enumerate(works):
        if work.video.kind == "shard":
            save_indices(track_shard(config, work), work.file)
            out.append(StageOutput(work.path, work.key, False))
            continue
        if i == 0 or work.video.video_id != works[i - 1].video.video_id:
            tracker, shot = _continuing(config.tracker, work.previous) if config.tracking else (None, None)
        ids, last = track_range(config, work, tracker, shot)
        shot = last if last is not None else shot
        save_indices(ids, work.file, _state(tracker, shot) if tracker is not None else None)
        out.append(StageOutput(work.path, work.key, False))
    return out


def _state(tracker: Tracker, shot: np.ndarray | None) -> dict:
    """What the next range continues from: the tracker's state, and the last frame's
    thumbnail (a cut at the next range's first frame is found against it)."""
    state = tracker.state()
    if shot is not None:
        state["shot"] = {"shape": list(shot.shape), "hsv": shot.reshape(-1).tolist()}
    return state


def _continuing(config: TrackerConfig, previous: StageOutput | None) -> tuple[Tracker, np.ndarray | None]:
    """A tracker carrying on from the state stored with `previous` (a new one at the
    start), and the thumbnail of the frame before (None at the start)."""
    if previous is None:
        return Tracker(config), None
    state = load_tracker_state(previous.file)
    if state is None:  # every ids file made with tracking on has one
        raise RuntimeError(f"{previous.path}: no tracker state to continue from")
    shot = state.get("shot")
    thumb = None if shot is None else np.asarray(shot["hsv"], np.uint8).reshape(shot["shape"])
    return Tracker.from_state(config, state), thumb


def import_assignment(config: TrackConfig) -> None:
    """When the input is tracked, import scipy.optimize (the tracker's assignment: ~0.5 s,
    imported where it is first used so that a rerun the cache serves never pays it) in a
    thread of its own, started while the model runs, so the first range's tracking does
    not wait for it."""
    if config.tracking and "scipy.optimize" not in sys.modules:
        threading.Thread(target=importlib.import_module, args=("scipy.optimize",), name="segflow-import-scipy",
                         daemon=True).start()


STAGE = StageSpec(
    name="track", task=track_task, config=track_config, key=track_key, cached=cached_track, warm_up=import_assignment,
    reads=("raw", "kept", "polys"),
    where=lambda layout, work: layout.stage_file("track", work.video, work.rng, work.key),
    ranges_per_task=None, in_order=True, with_model_task=False,
)
"""In range order, one task run at a time, over every range ready for it (one by one
behind the model; on a rerun, all at once)."""
