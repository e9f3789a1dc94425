"""Stage 2, segment: run a torchvision Mask R-CNN over batches of frames."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_logger
from prefect.runtime import task_run
from prefect.tasks import exponential_backoff

from segflow.contracts import Detections, FrameBatch, FrameRange, StageOutput, StageSpec, VideoInfo, Work
from segflow.media import load_image, local_copy, prefetch, read_batches
from segflow.models import worker
from segflow.models.inference import segment_batches
from segflow.faults import retryable
from segflow.models.registry import ModelRef, cpu_streams, load_model, model_slot, usable_cores
from segflow.settings import env_switch
from segflow.storage.keys import key_of
from segflow.storage.table import save_detections

# ---- the stage ------------------------------------------------------------------


RETRIES = 2
_log = get_logger("segflow.segment")


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA out-of-memory, however torch chose to raise it."""
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def segment_range(
    model: torch.nn.Module, video: VideoInfo, rng: FrameRange, device: torch.device, batch_size: int, score_floor: float,
    mixed_precision: bool = False,
) -> tuple[Detections, int]:
    """Segment one frame range, halving the batch on out-of-memory until it fits."""
    while True:
        try:
            batches = read_batches(video, rng, batch_size, threads=decode_threads(device))
            batches = decoded_first(batches) if decode_first(video, rng, device) else prefetch(batches)
            return segment_batches(model, batches, device, score_floor, mixed_precision)
        except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
            if not is_out_of_memory(exc) or batch_size == 1:
                raise
            batch_size //= 2
            if device.type == "cuda":
                torch.cuda.empty_cache()
            _log.warning("out of memory on %s: retrying the range with batch %d", device, batch_size)


PREDECODE_BYTES = 256 * 2**20  # a range's RGB frames decoded before the CPU model runs, up to this


def decode_first(video: VideoInfo, rng: FrameRange, device: torch.device) -> bool:
    """Whether to decode the range's frames before the model runs, closing the decoder.

    decord's reader keeps decoding and pooling frames in its own thread while it is
    open: streaming a 64-frame range at 240x320 into the CPU model, RSS climbed ~400 MB
    until the reader closed (flat when decoded first; bench/RESULTS.md, stop 13), and
    by more the longer the video. On the CPU the model takes seconds per batch, so
    holding the range's frames (15 MB at 240x320, 59 MB at 480x640, 177 MB at 720p)
    costs less and decoding ahead gains little. On a GPU decoding must overlap the
    model; frames too large to hold are streamed too.
    """
    if device.type != "cpu" or env_switch("SEGFLOW_STREAM_DECODE"):  # streaming forced (for comparison)
        return False
    return len(rng) * video.width * video.height * 3 <= PREDECODE_BYTES


def decoded_first(batches: Iterator[FrameBatch]) -> Iterator[FrameBatch]:
    """Every batch decoded (and the decoder closed) before the first is handed on;
    each is let go once the model has had it."""
    held = collections.deque(batches)
    release_free_memory()  # what the decoder freed goes back now, not under the model's buffers
    while held:
        yield held.popleft()


_MALLOC_TRIM = None


def release_free_memory() -> None:
    """Give the C heap's free pages back to the OS (glibc `malloc_trim`; a no-op elsewhere).

    A forward pass allocates a few hundred MB of short-lived activations from whichever
    thread runs it; glibc keeps freed chunks in per-thread arenas, so without this the
    process's RSS creeps up over the first several ranges of a long video (measured by
    bench/memory.py: 2,000 frames peaked 1.32x higher than 200 frames; with it, flat).
    """
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        try:
            import ctypes
            import ctypes.util

            trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
            trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
            _MALLOC_TRIM = trim
        except (OSError, AttributeError):  # not glibc
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


@dataclass(frozen=True)
class SegmentConfig:
    """What the segment stage needs of a job: the model and how to run it."""

    model: ModelRef
    model_spec: str  # the --model value (the device's model process resolves it again)
    device: torch.device
    cpu_fallback: bool  # after the GPU's retries, run the range on the CPU
    batch_size: int  # frames per forward
    score_floor: float  # raw output kept down to this score (so confidence reruns skip the model)
    mixed_precision: bool  # float16 autocast + channels_last (only ever on a GPU)


def segment_config(job) -> SegmentConfig:
    return SegmentConfig(job.model, job.settings.model, job.device, job.settings.cpu_fallback, job.batch_size,
                         job.score_floor, job.mixed_precision)


def raw_key(config, video: VideoInfo, rng: FrameRange) -> str:
    """Cache key of a range's raw model output: content, weights, range, score floor, precision."""
    parts = ("raw", video.video_id, config.model.model_id, rng.start, rng.end, config.score_floor)
    return key_of(*parts, "float16") if config.mixed_precision else key_of(*parts)


def cached_raw(config: SegmentConfig, work: Work) -> StageOutput | None:
    """The range's raw model output when it is cached already, else None."""
    return StageOutput(work.path, work.key, cached=True) if work.file.exists() else None


def model_streams(config: SegmentConfig) -> int:
    """Model tasks in flight: one more than the ranges the model segments side by side
    (`cpu_streams` on the CPU, one on a GPU), so the next is queued when one finishes."""
    return (cpu_streams()[0] if config.device.type == "cpu" else 1) + 1


def decode_threads(device: torch.device) -> int:
    """Decoder threads of a range: one on the CPU, where the model needs the cores, and a
    few on a GPU, where one thread decoding 720p h264 can fall behind the model."""
    if device.type != "cuda":
        return 1
    return max(1, min(4, usable_cores() // 2))


def task_device(config: SegmentConfig) -> torch.device:
    """The configured device, or the CPU on the last retry when the user opted into fallback."""
    if config.cpu_fallback and config.device.type == "cuda" and task_run.run_count > RETRIES:
        get_run_logger().warning("GPU failed %d times: falling back to the CPU for this range", RETRIES + 1)
        return torch.device("cpu")
    return config.device


@task(
    name="segment",
    retries=RETRIES,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=retryable,  # not for what no retry fixes (a full disk): the model would run again
    cache_policy=NO_CACHE,
)
def segment_task(config: SegmentConfig, works: list[Work]) -> list[StageOutput]:
    """Decode and segment frame ranges (a video's one range, or a few images), each unless
    its raw output is there already (a retry redoes only the rest).

    Submitted as `for_device(config)` (the GPU concurrency tag, when asked for).
    """
    if len(works) > 1 and all(w.video.kind == "image" for w in works):
        return segment_images(config, works)
    return [segment_one(config, w) for w in works]


def segment_one(config: SegmentConfig, work: Work) -> StageOutput:
    """Decode and segment one frame range and save its raw detections, unless saved already."""
    if work.file.exists():
        return StageOutput(work.path, work.key, cached=True)
    device = task_device(config)
    mixed = config.mixed_precision and device.type == "cuda"  # not on a CPU fallback
    det, frames_run = segment_somewhere(config, work.video, work.rng, device, mixed)
    save_detections(det, work.file, frames_run)
    return StageOutput(work.path, work.key, cached=False, frames_run=frames_run)


def segment_images(config: SegmentConfig, works: list[Work]) -> list[StageOutput]:
    """Segment images (one-frame inputs), `config.batch_size` of one size per forward as a
    video's frames go, and save each one's raw detections, unless cached.

    One image per forward cost the CPU model ~30% more per frame than a video's batches
    of two (bench/RESULTS.md, stop 16). Detections are told apart by their position in
    the batch and saved as frame 0 of their image, as `segment_one` saves them.
    """
    out = [StageOutput(w.path, w.key, cached=True) if w.file.exists() else None for w in works]
    todo: dict[tuple[int, int], list[int]] = {}  # (height, width) -> positions to segment
    for i, w in enumerate(works):
        if out[i] is None:
            todo.setdefault((w.video.height, w.video.width), []).append(i)
    device = task_device(config)
    mixed = config.mixed_precision and device.type == "cuda"
    for same_size in todo.values():
        try:
            found = images_somewhere(config, [works[i].video for i in same_size], device, mixed)
        except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
            if not is_out_of_memory(exc):
                raise
            found = None  # one by one below (`segment_range` halves its batch on out-of-memory)
        for n, i in enumerate(same_size):
            if found is None:
                out[i] = segment_one(config, works[i])
                continue
            det = found.take(np.flatnonzero(found.frame == n))
            save_detections(replace(det, frame=np.zeros_like(det.frame)), works[i].file, 1)
            out[i] = StageOutput(works[i].path, works[i].key, cached=False, frames_run=1)
    return out


def images_somewhere(config: SegmentConfig, videos: list[VideoInfo], device: torch.device, mixed: bool) -> Detections:
    """`segment_same_size` in the device's model process (a GPU), or in this process."""
    if in_worker(config, device):
        try:
            return worker.images_in_worker(config.model_spec, config.model.digest, device, videos, config.batch_size,
                                           config.score_floor, mixed)
        except worker.NotInWorker as exc:
            _log.warning("the model process cannot load %s (%s): segmenting in this process", config.model_spec, exc)
            _IN_PROCESS.add(config.model_spec)
    with model_slot(device):
        return segment_same_size(config.model, videos, device, config.batch_size, config.score_floor, mixed)


def segment_same_size(ref, videos: list[VideoInfo], device: torch.device | str, batch_size: int, score_floor: float,
                      mixed_precision: bool) -> Detections:
    """Detections of same-size images, `batch_size` per forward, with `ref`'s model;
    `frame` is each image's position in `videos`."""
    device = torch.device(device)
    model = load_model(ref, device, channels_last=mixed_precision)

    def batches() -> Iterator[FrameBatch]:
        for lo in range(0, len(videos), batch_size):
            frames = [load_image(local_copy(v)) for v in videos[lo:lo + batch_size]]
            if len({f.shape for f in frames}) > 1:  # the header's size was not the pixels' size
                for n, f in enumerate(frames, lo):
                    yield FrameBatch(f[None], np.array([n]), np.zeros(1))
                continue
            yield FrameBatch(np.stack(frames), np.arange(lo, lo + len(frames)), np.zeros(len(frames)))
    try:
        return segment_batches(model, batches(), device, score_floor, mixed_precision)[0]
    finally:
        release_free_memory()


def in_worker(config: SegmentConfig, device: torch.device) -> bool:
    """Whether ranges go to the device's model process (a GPU's; `models/worker.py`)."""
    return worker.wanted(device) and config.model_spec not in _IN_PROCESS


_IN_PROCESS: set[str] = set()  # models the worker process could not resolve


def segment_somewhere(config: SegmentConfig, video: VideoInfo, rng: FrameRange, device: torch.device,
                      mixed: bool) -> tuple[Detections, int]:
    """Segment a range in the device's model process (a GPU; see `models/worker.py`), or
    in this process (the CPU: a few ranges side by side, one thread each)."""
    batch_size, floor = config.batch_size, config.score_floor
    if in_worker(config, device):
        try:
            return worker.segment_in_worker(config.model_spec, config.model.digest, device, video, rng, batch_size,
                                            floor, mixed)
        except worker.NotInWorker as exc:
            _log.warning("the model process cannot load %s (%s): segmenting in this process", config.model_spec, exc)
            _IN_PROCESS.add(config.model_spec)
    with model_slot(device):  # one range per GPU; on the CPU a few side by side
        return segment_with(config.model, video, rng, device, batch_size, floor, mixed)


def segment_with(ref, video: VideoInfo, rng: FrameRange, device: torch.device | str, batch_size: int,
                 score_floor: float, mixed_precision: bool) -> tuple[Detections, int]:
    """`segment_range` with `ref`'s model (loaded once per process, channels_last in mixed
    precision), then the heap's free pages handed back (here or in the model process)."""
    device = torch.device(device)
    model = load_model(ref, device, channels_last=mixed_precision)
    try:
        return segment_range(model, video, rng, device, batch_size, score_floor, mixed_precision)
    finally:
        release_free_memory()


GPU_TAG = "segflow-gpu"  # `prefect concurrency-limit create segflow-gpu 1`: one range per GPU


def for_device(config: SegmentConfig):
    """The segment task for `config.device`: tagged `GPU_TAG` on a GPU when SEGFLOW_GPU_TAG=1,
    so a tag concurrency limit can hold a GPU shared by several flow processes to one
    range at a time. Untagged otherwise: every tagged task run first asks the API for a
    concurrency slot, a database write that a busy SQLite-backed server answers with 503
    and a 2 s client back-off (measured on an H200: segment tasks started 0.6-2.4 s
    late). Within one process the model process already runs one range at a time."""
    tagged = config.device.type == "cuda" and env_switch("SEGFLOW_GPU_TAG") is True
    return segment_task.with_options(tags=[GPU_TAG]) if tagged else segment_task


STAGE = StageSpec(
    name="raw", task=segment_task, task_for=for_device, config=segment_config,
    key=lambda config, work: raw_key(config, work.video, work.rng),
    where=lambda layout, work: layout.cache("raw", work.video.video_id, work.rng, work.key),
    cached=cached_raw, ranges_per_task=1, images_per_task=16, tasks_in_flight=model_streams,
)
"""The model's queue: ranges in order, a video's alone, up to 16 uncached images per task
run (bench/RESULTS.md, stop 16: 16 beat 8)."""
