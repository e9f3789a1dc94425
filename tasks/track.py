"""Stage 5, track: give every kept instance an identity.

Tracking off: each instance on each frame is its own object. Tracking on: instances
are associated frame to frame by mask IoU (same class only) with an optimal
assignment, and a track that goes unmatched survives `track_buffer` frames so short
occlusions and misses do not split it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from segflow.tasks.filter import mask_iou


@dataclass(frozen=True)
class TrackerConfig:
    """The knobs users tune."""

    match_iou: float = 0.2  # minimum mask IoU to continue a track
    track_buffer: int = 30  # frames a lost track waits to be matched again


@dataclass
class _Track:
    track_id: int
    label: int
    rle: dict
    last_frame: int


@dataclass
class Tracker:
    """Frame-by-frame mask-IoU tracker; feed frames in order with `update`."""

    config: TrackerConfig = field(default_factory=TrackerConfig)
    next_id: int = 1
    tracks: list[_Track] = field(default_factory=list)

    def update(self, frame: int, labels: np.ndarray, rles: list[dict]) -> np.ndarray:
        """Track ids (int64) for the instances of one frame, in input order."""
        self.tracks = [t for t in self.tracks if frame - t.last_frame <= self.config.track_buffer]
        ids = np.zeros(len(rles), np.int64)
        matched = set()
        if self.tracks and rles:
            iou = mask_iou([t.rle for t in self.tracks], rles)
            same = np.array([t.label for t in self.tracks])[:, None] == labels[None, :]
            cost = np.where(same & (iou >= self.config.match_iou), iou, 0.0)
            rows, cols = linear_sum_assignment(-cost)
            for r, c in zip(rows, cols):
                if cost[r, c] > 0:
                    track = self.tracks[r]
                    track.rle, track.last_frame = rles[c], frame
                    ids[c] = track.track_id
                    matched.add(c)
        for c in range(len(rles)):
            if c not in matched:
                self.tracks.append(_Track(self.next_id, int(labels[c]), rles[c], frame))
                ids[c] = self.next_id
                self.next_id += 1
        return ids


def assign_ids(
    frames: np.ndarray, labels: np.ndarray, rles: list[dict], tracker: Tracker | None
) -> np.ndarray:
    """Track ids for instances sorted by frame; `tracker=None` means tracking off (ids are 0)."""
    ids = np.zeros(len(frames), np.int64)
    if tracker is None:
        return ids
    for frame in np.unique(frames):
        idx = np.flatnonzero(frames == frame)
        ids[idx] = tracker.update(int(frame), labels[idx], [rles[i] for i in idx])
    return ids


def object_ids(video_id: str, frames: np.ndarray, track_ids: np.ndarray, tracking: bool) -> list[str]:
    """The `object_id` strings: one per track, or one per instance when tracking is off."""
    if tracking:
        return [f"{video_id[:8]}-t{t:05d}" for t in track_ids]
    seen: dict[int, int] = {}
    out = []
    for f in frames:
        k = seen.get(int(f), 0)
        seen[int(f)] = k + 1
        out.append(f"{video_id[:8]}-f{int(f):06d}-{k:03d}")
    return out


# ---- Prefect wrapper ---------------------------------------------------------------

from pathlib import Path  # noqa: E402

from prefect import task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from segflow.storage.keys import key_of  # noqa: E402
from segflow.storage.table import load_indices, load_instances, save_indices  # noqa: E402
from segflow.tasks.contracts import FrameRange, StageOutput, VideoInfo  # noqa: E402


@task(name="track", cache_policy=NO_CACHE)
def track_task(
    job, video: VideoInfo, ranges: list[FrameRange], raw: list[StageOutput], kept: list[StageOutput], polys: list[StageOutput]
) -> list[StageOutput]:
    """Track ids for every range of one input, in frame order.

    A range's ids depend on every range before it, so each key chains the previous
    one; when any range is missing, the tracker replays the input from the start.
    """
    s = job.settings
    config = (s.tracking, s.track_buffer, s.match_iou)
    keys, prev = [], None
    for rng, p in zip(ranges, polys):
        prev = key_of("track", prev, p.key, rng.start, config)
        keys.append(prev)
    paths = [job.layout.cache("track", video.video_id, r, k) for r, k in zip(ranges, keys)]
    if all(p.exists() for p in paths):
        return [StageOutput(str(p), k, True) for p, k in zip(paths, keys)]
    tracker = Tracker(TrackerConfig(s.match_iou, s.track_buffer)) if s.tracking else None
    for r, k, path in zip(zip(raw, kept, polys), keys, paths):
        det, _ = load_instances(Path(r[0].path), Path(r[1].path), Path(r[2].path))
        ids = assign_ids(det.frame, det.label, det.rles, tracker)
        if not path.exists():
            save_indices(ids, path)
    return [StageOutput(str(p), k, False) for p, k in zip(paths, keys)]
