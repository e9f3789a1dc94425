"""The tracker's data: its settings, one track, one frame's detections.

Masks are COCO RLE dicts (``{"size": [H, W], "counts": bytes}``, pycocotools'
compressed form); boxes are float64 ``x0, y0, x1, y1``. Everything here is plain data
so that a tracker's state can be written as JSON after a frame range and read back
before the next one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from segflow.ops.rle import rle_boxes
from segflow.ops.shots import CUT_THRESHOLD
from segflow.settings import CLASS_PENALTY, default_of

TRACKER_VERSION = "mask-bytetrack-13"  # part of the cache key: bump when ids can change


@dataclass(frozen=True)
class TrackerConfig:
    """The knobs users tune (defaults measured by bench/tracking.py). Those that are label
    settings take their defaults from `segflow.settings` (written there once)."""

    match_iou: float = default_of("match_iou")  # minimum (motion-shifted) mask IoU to continue a track
    track_buffer: int = default_of("track_buffer")  # frames a lost track waits to be matched again
    exit_buffer: int = 300  # frames a track that left the frame waits (re-entry only), if longer
    low_score: float = default_of("track_low_score")  # second-pass detections score at least this (< confidence)
    reid_gate: float = default_of("reid_gate")  # re-identification radius, in object sizes (0 turns re-id off)
    velocity_smoothing: float = 0.5  # weight of the newest displacement in the velocity
    class_penalty: float = CLASS_PENALTY  # IoU a match across classes gives up (>= 1: never across classes)
    color_tolerance: float = 45.0  # mean-colour distance (RGB, 0-255) two views of one object stay within
    color_separation: float = 70.0  # two tracks this far apart in colour are told apart by it (0: colour off)
    cut_threshold: float = CUT_THRESHOLD  # mean HSV change (0-255) from one frame to the next that is a shot cut (0: off)


@dataclass
class Track:
    """One identity: its last mask and box, its motion and its class votes."""

    track_id: int
    label: int
    rle: dict  # last mask
    size: tuple[int, int]  # (H, W) of the mask
    box: np.ndarray  # (4,) last box x0, y0, x1, y1
    vel: np.ndarray  # (2,) px / frame of the box centre
    extent: float  # object size (px across), decays slowly so occlusion doesn't shrink it
    last_frame: int
    hits: int = 1
    parent: int = 0  # track this one split off from (a fragment), 0 when independent
    votes: dict[int, int] = field(default_factory=dict)  # detections per class
    front_of: list[int] = field(default_factory=list)  # tracks last seen passing behind this one
    merged: int = 0  # while seen as one shape with another track: that track's id
    color: list[float] | None = None  # mean colour of its own (unmerged) detections, None when unknown

    def vote(self, label: int) -> None:
        """Count a detection's class; the track's class is the majority (ties keep the current)."""
        self.votes[label] = self.votes.get(label, 0) + 1
        if self.votes[label] > self.votes.get(self.label, 0):
            self.label = label

    @property
    def centre(self) -> np.ndarray:
        """``(2,)`` centre of the last box."""
        return (self.box[:2] + self.box[2:]) / 2

    def to_json(self) -> dict:
        """The track as JSON-ready plain data (floats round-trip unchanged)."""
        return {
            "track_id": self.track_id, "label": self.label, "size": list(self.size),
            "counts": self.rle["counts"].decode("ascii"), "box": self.box.tolist(), "vel": self.vel.tolist(),
            "extent": float(self.extent), "last_frame": self.last_frame, "hits": self.hits, "parent": self.parent,
            "votes": [[k, v] for k, v in self.votes.items()], "front_of": list(self.front_of),
            "merged": self.merged, "color": self.color,
        }

    @staticmethod
    def from_json(t: dict) -> Track:
        """Inverse of `to_json`."""
        return Track(
            track_id=t["track_id"], label=t["label"], size=(t["size"][0], t["size"][1]),
            rle={"size": list(t["size"]), "counts": t["counts"].encode("ascii")},
            box=np.asarray(t["box"], np.float64), vel=np.asarray(t["vel"], np.float64), extent=t["extent"],
            last_frame=t["last_frame"], hits=t["hits"], parent=t["parent"], votes={k: v for k, v in t["votes"]},
            front_of=list(t.get("front_of", [])), merged=t.get("merged", 0), color=t.get("color"),
        )


@dataclass
class FrameDetections:
    """One frame's detections as the tracker sees them.

    Attributes:
        labels: ``(N,)`` int64 class ids.
        rles: N COCO RLE masks.
        boxes: ``(N, 4)`` float64 boxes of the masks.
        colors: ``(N, 3)`` float64 mean colour under each mask (NaN rows: unknown), or
            None (no colours: the tracker goes by motion, size and class alone).
    """

    labels: np.ndarray
    rles: list[dict]
    boxes: np.ndarray
    colors: np.ndarray | None = None

    @staticmethod
    def of(labels: np.ndarray | None, rles: list[dict] | None, colors: np.ndarray | None = None) -> FrameDetections:
        """The detections of `labels` ``(N,)``, `rles` and their `colors` ``(N, 3)``
        (None: no detections / no colours)."""
        rles = list(rles or [])
        labels = np.zeros(0, np.int64) if labels is None else np.asarray(labels, np.int64)
        if colors is not None:
            colors = np.asarray(colors, np.float64).reshape(len(rles), 3)
        return FrameDetections(labels, rles, rle_boxes(rles), colors)

    def color(self, d: int) -> np.ndarray | None:
        """``(3,)`` colour of detection `d`, or None when unknown."""
        if self.colors is None or not np.isfinite(self.colors[d]).all():
            return None
        return self.colors[d]
