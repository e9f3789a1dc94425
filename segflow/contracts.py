"""The small data contracts passed between stages (numpy in, numpy out).

Prefect tasks never pass these across the task boundary: they pass cache keys and
paths, and each stage loads its contract from `segflow.storage`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from segflow.storage.fs import stored_path


@dataclass(frozen=True)
class VideoInfo:
    """What `decode.probe` learns about one input without decoding it all."""

    source: str  # path or URI as the user gave it (resolved)
    video_id: str  # content digest
    kind: str  # "video" or "image"
    frame_count: int
    width: int
    height: int
    fps: float
    local: str = ""  # where the bytes are on this machine, when `source` is a URI


@dataclass(frozen=True)
class FrameRange:
    """Frames `start..end`, both inclusive."""

    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start + 1

    @property
    def name(self) -> str:
        return f"frames_{self.start:06d}_{self.end:06d}"


@dataclass
class FrameBatch:
    """Decoded frames: RGB uint8 (N, H, W, 3), their indices and presentation times."""

    frames: np.ndarray
    indices: np.ndarray  # int64 (N,)
    timestamps: np.ndarray  # float64 (N,) seconds


@dataclass
class Detections:
    """Instances found on the frames of one range, in model order.

    Masks are COCO RLEs (dicts with `size` [h, w] and `counts` bytes): compact enough
    to cache the raw output of a whole range and to compute mask IoU without decoding.
    """

    frame: np.ndarray  # int64 (N,)
    timestamp: np.ndarray  # float64 (N,)
    label: np.ndarray  # int64 (N,) model label, 1..K
    score: np.ndarray  # float32 (N,)
    boxes: np.ndarray  # float32 (N, 4) x0, y0, x1, y1 in pixels
    rles: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frame)

    def take(self, idx: np.ndarray) -> "Detections":
        """The detections at positions `idx`, in that order."""
        idx = np.asarray(idx, dtype=np.int64)
        return Detections(
            frame=self.frame[idx],
            timestamp=self.timestamp[idx],
            label=self.label[idx],
            score=self.score[idx],
            boxes=self.boxes[idx].reshape(-1, 4),
            rles=[self.rles[i] for i in idx],
        )

    @staticmethod
    def empty() -> "Detections":
        return Detections(
            frame=np.zeros(0, np.int64),
            timestamp=np.zeros(0, np.float64),
            label=np.zeros(0, np.int64),
            score=np.zeros(0, np.float32),
            boxes=np.zeros((0, 4), np.float32),
            rles=[],
        )

    @staticmethod
    def concat(parts: list["Detections"]) -> "Detections":
        parts = [p for p in parts if len(p)]
        if not parts:
            return Detections.empty()
        return Detections(
            frame=np.concatenate([p.frame for p in parts]),
            timestamp=np.concatenate([p.timestamp for p in parts]),
            label=np.concatenate([p.label for p in parts]),
            score=np.concatenate([p.score for p in parts]),
            boxes=np.concatenate([p.boxes for p in parts]),
            rles=[r for p in parts for r in p.rles],
        )


@dataclass
class Polygons:
    """Polygonized detections: row `i` is detection `index[i]` of the filtered set."""

    index: np.ndarray  # int64 (M,) position in the filtered Detections
    wkb: list[bytes]
    vertex_count: np.ndarray  # int32 (M,)
    area: np.ndarray  # float64 (M,)


@dataclass(frozen=True)
class StageOutput:
    """What a stage task hands on: where its cached output lives, and how it got there."""

    path: str
    key: str
    cached: bool  # True when the file was already there and no work was done
    frames_run: int = 0  # frames that went through the model
    dropped_unmapped: int = 0  # instances of classes the ontology does not map
    members: str = ""  # polygonize: digest of which kept instances got a polygon (what tracking sees)

    @property
    def file(self):
        """`path` as a Path (a UPath in an object store)."""
        return stored_path(self.path)
