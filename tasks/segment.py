"""Stage 2, segment: each range's frames through the model (`segflow.models.runner`), in
the device's model process on a GPU (`segflow.models.worker`), raw output cached."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_logger
from prefect.runtime import task_run
from prefect.tasks import exponential_backoff

from segflow.contracts import Detections, FrameRange, StageOutput, StageSpec, VideoInfo, Work
from segflow.faults import retryable
from segflow.models import worker
from segflow.models.registry import ModelRef, cpu_streams, model_slot
from segflow.models.runner import is_out_of_memory, segment_same_size, segment_with
from segflow.settings import env_switch
from segflow.storage.keys import key_of
from segflow.storage.table import save_detections

# ---- the stage ------------------------------------------------------------------


RETRIES = 2
_log = get_logger("segflow.segment")


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
