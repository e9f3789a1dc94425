"""The small types passed between stages, and the declaration of a stage.

Arrays (`FrameBatch`, `Detections`, `Polygons`) stay inside a task: across the task
boundary a stage hands on a `StageOutput` (where its cached output lives), and receives
`Work` (one frame range: its key, the path to write and the outputs it reads). Each
`tasks/<stage>.py` declares itself as a `StageSpec`, which `segflow/pipeline.py` runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segflow.storage.fs import stored_path


@dataclass(frozen=True)
class VideoInfo:
    """What `decode.probe` learns about one input without decoding it all."""

    source: str  # path or URI as the user gave it (resolved)
    video_id: str  # content digest
    kind: str  # "video", "image", or "shard" (images labeled and stored together; see segflow.shards)
    frame_count: int
    width: int
    height: int
    fps: float
    local: str = ""  # where the bytes are on this machine, when `source` is a URI
    members: tuple["VideoInfo", ...] = ()  # a shard (kind "shard"): its images, frame i = members[i]

    @property
    def inputs(self) -> tuple["VideoInfo", ...]:
        """The inputs this stands for: a shard's images, else itself."""
        return self.members if self.kind == "shard" else (self,)


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
class Thumbnails:
    """One small HSV picture per frame run (`segflow.ops.shots.frame_thumbnail`): what
    the track stage finds shot cuts with. Per frame, not per detection: a frame with no
    detection has one too."""

    frame: np.ndarray  # int64 (F,) frame numbers, increasing
    hsv: np.ndarray  # uint8 (F, S, S, 3)

    @staticmethod
    def concat(parts: list["Thumbnails"]) -> "Thumbnails":
        return Thumbnails(np.concatenate([p.frame for p in parts]).astype(np.int64),
                          np.concatenate([p.hsv for p in parts]).astype(np.uint8))


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
    # float32 (N, 3) mean RGB of the frame under each mask (`segflow.ops.appearance`), the
    # tracker's appearance cue; None when not measured (NaN rows: empty masks)
    color: np.ndarray | None = None
    # every frame's thumbnail (not per row: `take` keeps them all), None when not kept
    thumbs: Thumbnails | None = None

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
            color=None if self.color is None else self.color[idx].reshape(-1, 3),
            thumbs=self.thumbs,
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
        """The parts' rows in order; thumbnails joined when every part has them (frames
        without detections included)."""
        every = [p.thumbs for p in parts]
        thumbs = Thumbnails.concat(every) if every and all(t is not None for t in every) else None
        parts = [p for p in parts if len(p)]
        if not parts:
            empty = Detections.empty()
            empty.thumbs = thumbs
            return empty
        return Detections(
            frame=np.concatenate([p.frame for p in parts]),
            timestamp=np.concatenate([p.timestamp for p in parts]),
            label=np.concatenate([p.label for p in parts]),
            score=np.concatenate([p.score for p in parts]),
            boxes=np.concatenate([p.boxes for p in parts]),
            rles=[r for p in parts for r in p.rles],
            color=None if any(p.color is None for p in parts) else np.concatenate([p.color for p in parts]),
            thumbs=thumbs,
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
    per_member: tuple[int, ...] = ()  # a shard's segment/filter: frames_run / dropped_unmapped of each image

    @property
    def file(self):
        """`path` as a Path (a UPath in an object store)."""
        return stored_path(self.path)


@dataclass(frozen=True)
class Work:
    """One frame range handed to a stage task: its cache key, the file to write, and the
    outputs of earlier stages it reads (None where the stage does not read them)."""

    video: VideoInfo
    rng: FrameRange
    key: str = ""
    path: str = ""
    raw: StageOutput | None = None  # segment's output
    kept: StageOutput | None = None  # filter's output
    polys: StageOutput | None = None  # polygonize's output
    track: StageOutput | None = None  # track's output
    previous: StageOutput | None = None  # an in-order stage's output for the range before (same input)
    whole: tuple[tuple[StageOutput, ...], ...] = ()  # a `whole_input` stage: every range of the input,
    # its outputs of the stages the stage reads (in `reads` order)

    @property
    def file(self):
        """`path` as a Path (a UPath in an object store)."""
        return stored_path(self.path)


@dataclass(frozen=True)
class StageSpec:
    """A stage as data: what it reads, how its key and file are found, how its ranges are
    batched into task runs and how many run at once. `segflow.pipeline` runs a list of them.

    `config(job)` builds the stage's small settings object once per input; `key(config,
    work)` is the range's cache key (from the config and the keys of the outputs it reads,
    never from the whole job), `where(layout, work)` the file it writes, and `cached(config,
    work)` the finished output when that file is already there (else None). The task is
    called as `task(config, works)` and returns one `StageOutput` per `Work`.
    """

    name: str  # the output's name: a `Work` field for the stages after ("raw", "kept", ...)
    task: Any  # a Prefect task taking (config, list[Work]) -> list[StageOutput]
    config: Callable[[Any], Any]
    key: Callable[[Any, Work], str]
    where: Callable[[Any, Work], Any]  # (Layout, Work with its key) -> path
    cached: Callable[[Any, Work], StageOutput | None]
    reads: tuple[str, ...] = ()  # outputs of earlier stages put in each `Work`
    ranges_per_task: float | None = 4  # frames of this many full ranges per task run (None: all ready)
    tasks_in_flight: int | Callable[[Any], int] | None = None  # (from the config), None: no bound
    ranges_ahead: float | None = None  # frames of this many full ranges done here and not by the next stage
    in_order: bool = False  # one task at a time, ranges in order, each `Work` given `previous`
    whole_input: bool = False  # a range starts once the stage before is done with its whole input
    with_model_task: bool = True  # fresh model output goes on with its own model task's ranges only
    counts_progress: bool = False  # ranges count as done for the progress bar when they reach this stage
    task_for: Callable[[Any], Any] | None = None  # the task to submit for a config (default: `task`)
    warm_up: Callable[[Any], None] | None = None  # (config) once the model is to run in this flow run: slow
    # one-time set-up of this stage (an import) started then, to overlap the model's work
    shard_cache_in_labels: bool = False  # a shard's output is kept in its label file, not in the cache (the
    # cache file goes once the label file is written: `segflow.pipeline` prunes it, persist's footer does not name it)
