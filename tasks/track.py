"""Stage 5, track: give every kept instance an identity that survives a whole video.

Tracking off: each instance on each frame is its own object (track id 0). Tracking on,
each frame runs three associations, ByteTrack-style but on masks:

1. kept (high-score) detections against every live track, lost ones included. The
   similarity is the mask IoU between the detection and the track's last mask
   *translated by the motion model's predicted displacement* (constant velocity of
   the visible box, exponentially smoothed, robust to edges being covered, clamped so
   the prediction stays in the frame); same class only; optimal assignment
   (Hungarian) above `match_iou`. The translation is done on the RLE itself.
   Classes: a track's class is the majority class of its detections; a detection
   of another class scores its IoU minus `class_penalty`, so a model's one-frame
   class flip on the same mask continues the track (the row keeps the class the
   model gave it) while a different object of another class never takes over.
   `class_penalty >= 1` makes tracks strictly single-class.
2. confirmed tracks still unmatched against the low-score detections (between
   `low_score` and the confidence, surviving NMS) the same way: a match keeps the
   track and its motion alive through a weak frame, but writes no row.
3. re-identification: confirmed tracks still unmatched against kept detections still
   unmatched, by distance from the predicted centre (or from where the track was last
   seen, whichever is nearer), gated by both objects' sizes plus a margin that grows
   with the time lost; same class, unless the class penalty is small (< 0.1, as after
   class-agnostic NMS), when another class only costs part of the gate (an object the
   model missed for a while often comes back under another name); a detection much
   bigger than the object is refused.
   This bridges long occlusions and objects that leave the frame and come back (the
   prediction is clamped to the frame, so a track that left waits where it left).

What is left starts a new track. A track unmatched for more than `track_buffer`
frames is forgotten.

Minimum track length: a track seen on fewer than `min_track_length` frames is
*tentative*. Its rows get its id like any other row (every kept instance has a row),
but it can only be continued by mask overlap (pass 1), never by a low-score detection
or by re-identification, so a flickering false positive cannot later take over an
identity that was lost nearby. Nothing is merged or renumbered after the fact: ids are
final when a frame is done, which keeps range files independent of later frames. The
default, 1, turns this off: on the benchmark, tentative tracks cost identity switches
in crowded videos (objects first seen while partly hidden) and saved none; raise it
for a detector whose false positives persist a frame or two.

Split shapes: an object cut in parts by an occluder is often detected as several
instances. A new track born touching a same-class track matched on the same frame is
recorded as that track's *fragment*: a detection that covers most of both is the
parent's, the fragment ends when the parent's mask covers it again, it is never
re-identified, and it becomes independent once seen apart from its parent.

Everything is pure numpy/scipy/pycocotools and deterministic: the same detections in
the same frame order give the same ids, however the frames are cut into ranges, which
is what makes an interrupted and resumed run write the same ids as a straight one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pycocotools.mask as mask_utils
from scipy.optimize import linear_sum_assignment

from segflow.ops.nms import mask_iou
from segflow.ops.rle import rle_boxes, shift_rle

TRACKER_VERSION = "mask-bytetrack-4"  # part of the cache key: bump when ids can change


@dataclass(frozen=True)
class TrackerConfig:
    """The knobs users tune (defaults measured by bench/tracking.py)."""

    match_iou: float = 0.2  # minimum (motion-shifted) mask IoU to continue a track
    track_buffer: int = 30  # frames a lost track waits to be matched again
    min_track_length: int = 1  # frames before a track is confirmed (low-score pass, re-id)
    low_score: float = 0.1  # second-pass detections score at least this (and < confidence)
    reid_gate: float = 1.0  # re-identification radius, in object sizes (0 turns re-id off)
    velocity_smoothing: float = 0.5  # weight of the newest displacement in the velocity
    class_penalty: float = 0.3  # IoU a match across classes gives up (>= 1: never across classes)


def clamp_displacement(box: np.ndarray, d: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Integer displacement `d` (dx, dy) limited so `box` moved by it stays in the frame.

    Besides keeping RLE shifts exact, this is the motion model at the border: a track
    that left the frame is predicted to wait where it left, which is where objects
    that turn around outside come back.
    """
    return np.array(_clamped(box.tolist(), float(d[0]), float(d[1]), size), np.int64)


def _clamped(box: list[float], dx: float, dy: float, size: tuple[int, int]) -> tuple[int, int]:
    """`clamp_displacement` on plain floats (the tracker calls it per track per frame)."""
    h, w = size
    return int(min(max(round(dx), -box[0]), w - box[2])), int(min(max(round(dy), -box[1]), h - box[3]))


# ---- the tracker ----------------------------------------------------------------------


@dataclass
class _Track:
    track_id: int
    label: int
    rle: dict  # last mask
    size: tuple[int, int]  # (H, W) of the mask
    box: np.ndarray  # last box x0, y0, x1, y1
    vel: np.ndarray  # px / frame of the box centre
    extent: float  # object size (px across), decays slowly so occlusion doesn't shrink it
    last_frame: int
    hits: int = 1
    parent: int = 0  # track this one split off from (a fragment), 0 when independent
    votes: dict[int, int] = field(default_factory=dict)  # detections per class

    def vote(self, label: int) -> None:
        """Count a detection's class; the track's class is the majority (ties keep the current)."""
        self.votes[label] = self.votes.get(label, 0) + 1
        if self.votes[label] > self.votes.get(self.label, 0):
            self.label = label

    @property
    def centre(self) -> np.ndarray:
        return (self.box[:2] + self.box[2:]) / 2


@dataclass
class _Frame:
    """One frame's detections as the tracker sees them."""

    labels: np.ndarray
    rles: list[dict]
    boxes: np.ndarray

    @staticmethod
    def of(labels: np.ndarray | None, rles: list[dict] | None) -> _Frame:
        rles = list(rles or [])
        labels = np.zeros(0, np.int64) if labels is None else np.asarray(labels, np.int64)
        return _Frame(labels, rles, rle_boxes(rles))


@dataclass
class Tracker:
    """Online mask tracker; feed frames in increasing order with `update`.

    The whole state is plain data, so a tracker carried from one frame range to the
    next continues its tracks across the boundary.
    """

    config: TrackerConfig = field(default_factory=TrackerConfig)
    next_id: int = 1
    tracks: list[_Track] = field(default_factory=list)

    def update(
        self,
        frame: int,
        labels: np.ndarray,
        rles: list[dict],
        low_labels: np.ndarray | None = None,
        low_rles: list[dict] | None = None,
    ) -> np.ndarray:
        """Track ids (int64) for the kept instances of one frame, in input order.

        `low_labels`/`low_rles` are this frame's lower-score detections: they can keep
        a track alive but never get an id or start a track.
        """
        cfg = self.config
        high, low = _Frame.of(labels, rles), _Frame.of(low_labels, low_rles)
        self.tracks = [t for t in self.tracks if self._alive(t, frame)]
        tracks = self.tracks
        ids = np.zeros(len(high.rles), np.int64)
        shifted, predicted = self._predict(tracks, frame)
        parents = self._parent_index(tracks)
        every = range(len(tracks))

        # 1. kept detections against every live track, on motion-shifted mask IoU.
        pairs = _match_iou(tracks, shifted, every, high, range(len(high.rles)), cfg, parents)
        done_t = {t for t, _ in pairs}
        done_d = {d for _, d in pairs}
        updates = [(t, high, d) for t, d in pairs]

        # 2. what is left, against the low-score detections (keeps tracks alive, no row).
        left_t = [i for i in every if i not in done_t and tracks[i].hits >= cfg.min_track_length]
        pairs = _match_iou(tracks, shifted, left_t, low, range(len(low.rles)), cfg, parents)
        done_t |= {t for t, _ in pairs}
        updates += [(t, low, d) for t, d in pairs]

        # 3. re-identify confirmed, independent tracks from their predicted centre.
        if cfg.reid_gate > 0:
            left_t = [i for i in every if i not in done_t and tracks[i].hits >= cfg.min_track_length
                      and parents[i] < 0]
            left_d = [d for d in range(len(high.rles)) if d not in done_d]
            pairs = _match_reid(tracks, predicted, left_t, high, left_d, frame, cfg.reid_gate, cfg.class_penalty)
            done_t |= {t for t, _ in pairs}
            done_d |= {d for _, d in pairs}
            updates += [(t, high, d) for t, d in pairs]

        merged = _merged_fragments(tracks, shifted, parents, done_t, updates)
        for t, dets, d in updates:
            self._absorb(tracks[t], dets, d, frame)
            if dets is high:
                ids[d] = tracks[t].track_id
        matched_high = [(tracks[t], d) for t, dets, d in updates if dets is high]
        for d in range(len(high.rles)):
            if d not in done_d:
                ids[d] = self._start(high, d, frame, _parent_of(high, d, matched_high))
        self.tracks = [t for i, t in enumerate(self.tracks) if i not in merged]
        self._release_fragments(frame)
        return ids

    # -- carried between frame ranges --

    def state(self) -> dict:
        """The tracker's state as JSON-ready plain data (`from_state` restores it exactly:
        floats round-trip through JSON unchanged)."""
        return {
            "next_id": self.next_id,
            "tracks": [
                {
                    "track_id": t.track_id, "label": t.label, "size": list(t.size),
                    "counts": t.rle["counts"].decode("ascii"), "box": t.box.tolist(), "vel": t.vel.tolist(),
                    "extent": float(t.extent), "last_frame": t.last_frame, "hits": t.hits, "parent": t.parent,
                    "votes": [[k, v] for k, v in t.votes.items()],
                }
                for t in self.tracks
            ],
        }

    @classmethod
    def from_state(cls, config: TrackerConfig, state: dict) -> Tracker:
        """A tracker continuing from `state()` of one with the same config."""
        tracks = [
            _Track(
                track_id=t["track_id"], label=t["label"], size=(t["size"][0], t["size"][1]),
                rle={"size": list(t["size"]), "counts": t["counts"].encode("ascii")},
                box=np.asarray(t["box"], np.float64), vel=np.asarray(t["vel"], np.float64), extent=t["extent"],
                last_frame=t["last_frame"], hits=t["hits"], parent=t["parent"], votes={k: v for k, v in t["votes"]},
            )
            for t in state["tracks"]
        ]
        return cls(config, state["next_id"], tracks)

    # -- steps --

    def _parent_index(self, tracks: list[_Track]) -> np.ndarray:
        """For each track, the position of its parent track in `tracks`, or -1."""
        pos = {t.track_id: i for i, t in enumerate(tracks)}
        return np.array([pos.get(t.parent, -1) for t in tracks], np.int64)

    def _release_fragments(self, frame: int) -> None:
        """A fragment whose parent is gone, or seen apart from it, is an object of its own.

        "Apart" is judged only on a frame where both were seen: a lost fragment's box
        is stale and says nothing.
        """
        by_id = {t.track_id: t for t in self.tracks}
        for t in self.tracks:
            p = by_id.get(t.parent)
            if not t.parent:
                continue
            if p is None:
                t.parent = 0
            elif t.last_frame == p.last_frame == frame and not _touch(t.box, p.box, _margin(p)):
                t.parent = 0

    def _alive(self, t: _Track, frame: int) -> bool:
        """Whether a track is still waiting: unmatched for at most `track_buffer` frames."""
        return frame - t.last_frame <= self.config.track_buffer + 1

    def _predict(self, tracks: list[_Track], frame: int) -> tuple[list[dict], np.ndarray]:
        """Each track's last mask moved to where it should be now, and its predicted centre."""
        shifted, centres = [], np.zeros((len(tracks), 2))
        for i, t in enumerate(tracks):
            box, (vx, vy), ago = t.box.tolist(), t.vel.tolist(), frame - t.last_frame
            dx, dy = _clamped(box, vx * ago, vy * ago, t.size)
            shifted.append(shift_rle(t.rle, dx * t.size[0] + dy))
            centres[i] = (box[0] + box[2]) / 2 + dx, (box[1] + box[3]) / 2 + dy
        return shifted, centres

    def _absorb(self, t: _Track, dets: _Frame, d: int, frame: int) -> None:
        """Update a track with its matched detection: mask, box, velocity, size."""
        box = dets.boxes[d]
        # on plain floats (the same arithmetic as on 2-vectors, which cost more here)
        new = box.tolist()
        ago = max(frame - t.last_frame, 1)
        sx, sy = _box_step(t.box.tolist(), new)
        a = 1.0 if t.hits == 1 else self.config.velocity_smoothing  # first step: take it whole
        vx, vy = t.vel.tolist()
        t.vel = np.array(((1 - a) * vx + a * (sx / ago), (1 - a) * vy + a * (sy / ago)))
        t.rle, t.box, t.last_frame = dets.rles[d], box, frame
        t.extent = max(0.99 * t.extent, _extent(new))
        t.hits += 1
        t.vote(int(dets.labels[d]))

    def _start(self, dets: _Frame, d: int, frame: int, parent: int = 0) -> int:
        rle = dets.rles[d]
        box = dets.boxes[d]
        track = _Track(
            track_id=self.next_id, label=int(dets.labels[d]), rle=rle,
            size=(int(rle["size"][0]), int(rle["size"][1])), box=box, vel=np.zeros(2),
            extent=_extent(box), last_frame=frame, parent=parent, votes={int(dets.labels[d]): 1},
        )
        self.tracks.append(track)
        self.next_id += 1
        return track.track_id


def box_step(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Displacement (dx, dy) of an object from its old to its new visible box.

    The box centre jumps when the visible part changes (an occluder covers one side,
    the object leaves the frame, a detection covers only part of it). Per axis: when
    the box kept its size (up to mask noise), the centre's move; when it changed and
    one edge stayed put or both edges moved the same way, the smaller edge move (the
    other edge is the one being covered or uncovered); when both moved apart or
    together (the visible chord of a shape at a border), the centre's.
    """
    return np.array(_box_step(old.tolist(), new.tolist()))


def _box_step(old: list[float], new: list[float]) -> tuple[float, float]:
    """`box_step` on plain floats (the tracker calls it per match per frame)."""
    (ox0, oy0, ox1, oy1), (nx0, ny0, nx1, ny1) = old, new
    out = []
    for lo, hi, size in ((nx0 - ox0, nx1 - ox1, ox1 - ox0), (ny0 - oy0, ny1 - oy1, oy1 - oy0)):
        size = max(size, 1.0)
        resized = abs(hi - lo) > 0.1 * size + 2
        edge = min(abs(lo), abs(hi)) <= 3.0 + 0.02 * size or lo * hi > 0
        out.append((lo if abs(lo) < abs(hi) else hi) if resized and edge else (lo + hi) / 2)
    return out[0], out[1]


def _margin(t: _Track) -> float:
    return 4.0 + 0.25 * t.extent  # occluder bars leave a gap between the parts


def _touch(a: np.ndarray, b: np.ndarray, margin: float) -> bool:
    """Whether boxes a and b overlap once grown by `margin` px."""
    return bool(a[0] - margin < b[2] and b[0] - margin < a[2] and a[1] - margin < b[3] and b[1] - margin < a[3])


def _parent_of(dets: _Frame, d: int, matched: list[tuple[_Track, int]]) -> int:
    """The track a new detection split off from: a same-class track matched on this frame
    to a detection whose box touches this one (a shape cut in parts by an occluder, or
    a partial duplicate), else 0. The nearest such track wins."""
    best, best_d = 0, np.inf
    box = dets.boxes[d]
    for t, j in matched:
        if t.label == dets.labels[d] and _touch(box, dets.boxes[j], _margin(t)):
            gap = np.linalg.norm((box[:2] + box[2:]) / 2 - (dets.boxes[j][:2] + dets.boxes[j][2:]) / 2)
            if gap < best_d:
                best, best_d = t.track_id, gap
    return best


def _merged_fragments(
    tracks: list[_Track], shifted: list[dict], parents: np.ndarray, done_t: set, updates: list
) -> set:
    """Unmatched fragments that their parent's new mask covers: the parts became whole again."""
    got = {t: (dets, d) for t, dets, d in updates}
    out = set()
    for f, p in enumerate(parents):
        if p < 0 or f in done_t or p not in got:
            continue
        dets, d = got[p]
        cover = mask_utils.iou([shifted[f]], [dets.rles[d]], [1])  # intersection / fragment area
        if float(np.asarray(cover).ravel()[0]) >= 0.5:
            out.add(f)
    return out


def _extent(box: np.ndarray | list[float]) -> float:
    return float(max(box[2] - box[0], box[3] - box[1], 1.0))


def _match_iou(
    tracks: list[_Track], shifted: list[dict], t_idx, dets: _Frame, d_idx, cfg: TrackerConfig, parents: np.ndarray
) -> list[tuple[int, int]]:
    """Optimal same-class pairs (track, detection) by motion-shifted mask IoU >= min_iou.

    A detection that covers most of both a fragment's and its parent's predicted masks
    is the split shape made whole again: it can only go to the parent.
    """
    t_idx, d_idx = list(t_idx), list(d_idx)
    if not t_idx or not d_idx:
        return []
    iou = mask_iou([shifted[i] for i in t_idx], [dets.rles[j] for j in d_idx])
    min_iou = cfg.match_iou
    same = np.array([tracks[i].label for i in t_idx])[:, None] == dets.labels[d_idx][None, :]
    adjusted = iou - np.where(same, 0.0, cfg.class_penalty)  # a class flip must be clearly the same mask
    score = np.where(adjusted >= min_iou, adjusted, 0.0)
    row = {t: r for r, t in enumerate(t_idx)}
    family = [(r, row[parents[t]]) for r, t in enumerate(t_idx) if parents[t] >= 0 and parents[t] in row]
    if family:
        # cover[i, j]: share of track i's predicted mask inside detection j.
        cover = np.asarray(
            mask_utils.iou([shifted[i] for i in t_idx], [dets.rles[j] for j in d_idx], [1] * len(d_idx)), np.float64
        ).reshape(len(t_idx), len(d_idx))
        for f, p in family:
            # A detection that swallows both parts is the shape made whole: the parent's.
            whole = same[p] & (cover[f] >= 0.5) & (cover[p] >= 0.5)
            best = np.maximum(iou[p], iou[f])
            score[p] = np.where(whole & (best >= min_iou), np.maximum(score[p], best), score[p])
            score[f, whole] = 0.0
    rows, cols = linear_sum_assignment(-score)
    return [(t_idx[r], d_idx[c]) for r, c in zip(rows, cols) if score[r, c] > 0]


def _match_reid(
    tracks: list[_Track], predicted: np.ndarray, t_idx, dets: _Frame, d_idx, frame: int, gate: float,
    class_penalty: float = 1.0,
) -> list[tuple[int, int]]:
    """Optimal pairs by distance to where the track should be, over a gate.

    The gate is half of each object's size plus (1 px + half the track's speed) per
    frame lost, because constant velocity drifts. A detection much bigger than the
    object is refused (size cue); a smaller one is not, since what comes back is often
    only partly visible (entering the frame, behind an occluder).
    """
    t_idx, d_idx = list(t_idx), list(d_idx)
    if not t_idx or not d_idx:
        return []
    ext_t = np.array([tracks[i].extent for i in t_idx])
    gap = np.array([frame - tracks[i].last_frame for i in t_idx], np.float64)
    speed = np.array([np.hypot(*tracks[i].vel) for i in t_idx])
    boxes = dets.boxes[d_idx]
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    ext_d = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    last = np.array([tracks[i].centre for i in t_idx])
    # Two hypotheses: constant velocity, or stayed put (velocity measured while the
    # object was disappearing is often wrong); the nearer one counts.
    dist = np.minimum(
        np.linalg.norm(predicted[t_idx][:, None, :] - centres[None, :, :], axis=2),
        np.linalg.norm(last[:, None, :] - centres[None, :, :], axis=2),
    )
    radius = gate * (0.5 * ext_t[:, None] + 0.5 * ext_d[None, :] + (1.0 + 0.5 * speed[:, None]) * gap[:, None])
    same = np.array([tracks[i].label for i in t_idx])[:, None] == dets.labels[d_idx][None, :]
    # Another class costs ten times the class penalty of the gate: with a small penalty
    # (a model that confuses classes, class-agnostic NMS: 0.05) an object that comes back
    # nearby under another name keeps its id; from 0.1 (0.3 by default) re-identification
    # stays within a class.
    cost = dist / np.maximum(radius, 1.0) + np.where(same, 0.0, 10.0 * class_penalty)
    ok = (cost < 1.0) & (ext_d[None, :] <= 1.5 * ext_t[:, None] + 4)
    big = 1e6
    rows, cols = linear_sum_assignment(np.where(ok, cost, big))
    return [(t_idx[r], d_idx[c]) for r, c in zip(rows, cols) if ok[r, c]]


def assign_ids(
    frames: np.ndarray,
    labels: np.ndarray,
    rles: list[dict],
    tracker: Tracker | None,
    low_frames: np.ndarray | None = None,
    low_labels: np.ndarray | None = None,
    low_rles: list[dict] | None = None,
) -> np.ndarray:
    """Track ids for kept instances (any order); `tracker=None` means tracking off (ids 0).

    `low_*` are the lower-score detections of the same frames (second pass, no ids).
    Frames are fed to the tracker in increasing order; within a frame, instances keep
    their input order, so ids are a pure function of the input.
    """
    frames = np.asarray(frames, np.int64)
    ids = np.zeros(len(frames), np.int64)
    if tracker is None:
        return ids
    labels = np.asarray(labels, np.int64)
    low_frames = np.zeros(0, np.int64) if low_frames is None else np.asarray(low_frames, np.int64)
    low_labels = np.zeros(0, np.int64) if low_labels is None else np.asarray(low_labels, np.int64)
    low_rles = low_rles or []
    for frame in np.union1d(frames, low_frames):
        idx = np.flatnonzero(frames == frame)
        lo = np.flatnonzero(low_frames == frame)
        ids[idx] = tracker.update(
            int(frame), labels[idx], [rles[i] for i in idx], low_labels[lo], [low_rles[i] for i in lo]
        )
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


from prefect import task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from segflow.storage.keys import key_of  # noqa: E402
from segflow.storage.table import (  # noqa: E402
    indices_meta, instances_of, load_detections, load_tracker_state, save_indices,
)
from segflow.contracts import FrameRange, StageOutput, VideoInfo  # noqa: E402


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
