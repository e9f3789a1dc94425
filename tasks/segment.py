"""Stage 2, segment: each range's frames through the model (`segflow.models.runner`), in
the device's model process on a GPU (`segflow.models.worker`), raw output cached.

torch comes in with `segflow.models.runner`, imported by the first range that misses the
cache: a rerun the cache serves never imports it."""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_logger
from prefect.runtime import task_run
from prefect.tasks import exponential_backoff

from segflow.contracts import Detections, FrameRange, StageOutput, StageSpec, VideoInfo, Work
from segflow.faults import retryable
from segflow.models import worker
from segflow.models.devices import Device
from segflow.models.registry import ModelRef, cpu_streams, model_slot
from segflow.settings import env_switch
from segflow.storage.keys import key_of
from segflow.storage.fs import stored_path
from segflow.storage.table import detections_meta, load_detections, save_detections

# ---- the stage ------------------------------------------------------------------


RETRIES = 2
_log = get_logger("segflow.segment")


@dataclass(frozen=True)
class SegmentConfig:
    """What the segment stage needs of a job: the model and how to run it."""

    model: ModelRef
    model_spec: str  # the --model value (the device's model process resolves it again)
    device: Device
    cpu_fallback: bool  # after the GPU's retries, run the range on the CPU
    batch_size: int  # frames per forward
    score_floor: float  # raw output kept down to this score (so confidence reruns skip the model)
    mixed_precision: bool  # float16 autocast + channels_last (only ever on a GPU)


def segment_config(job) -> SegmentConfig:
    return SegmentConfig(job.model, job.settings.model, job.device, job.settings.cpu_fallback, job.batch_size,
                         job.score_floor, job.mixed_precision)


RAW_FORMAT = "color-thumbs-2"  # raw files carry each detection's mean colour (the tracker's appearance cue)
# and each frame's thumbnail (the track stage's shot cuts)


def raw_key(config, video: VideoInfo, rng: FrameRange) -> str:
    """Cache key of a range's raw model output: content, weights, range, score floor, precision
    (and `RAW_FORMAT`: what a raw file holds)."""
    parts = ("raw", RAW_FORMAT, video.video_id, config.model.model_id, rng.start, rng.end, config.score_floor)
    return key_of(*parts, "float16") if config.mixed_precision else key_of(*parts)


def cached_raw(config: SegmentConfig, work: Work) -> StageOutput | None:
    """The range's raw model output when it is cached already, else None."""
    return StageOutput(work.path, work.key, cached=True) if work.file.exists() else None


def model_streams(config: SegmentConfig) -> int:
    """Model tasks in flight: one more than the ranges the model segments side by side
    (`cpu_streams` on the CPU, one on a GPU), so the next is queued when one finishes."""
    return (cpu_streams()[0] if config.device.type == "cpu" else 1) + 1


def task_device(config: SegmentConfig) -> Device:
    """The configured device, or the CPU on the last retry when the user opted into fallback."""
    if config.cpu_fallback and config.device.type == "cuda" and task_run.run_count > RETRIES:
        get_run_logger().warning("GPU failed %d times: falling back to the CPU for this range", RETRIES + 1)
        return Device("cpu")
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
    """Decode and segment frame ranges (a video's one range, or a shard of images), each
    unless its raw output is there already (a retry redoes only the rest).

    Submitted as `for_device(config)` (the GPU concurrency tag, when asked for).
    """
    return [segment_shard(config, w) if w.video.kind == "shard" else segment_one(config, w) for w in works]


def segment_one(config: SegmentConfig, work: Work) -> StageOutput:
    """Decode and segment one frame range and save its raw detections, unless saved already."""
    if work.file.exists():
        return StageOutput(work.path, work.key, cached=True)
    device = task_device(config)
    mixed = config.mixed_precision and device.type == "cuda"  # not on a CPU fallback
    det, frames_run = segment_somewhere(config, work.video, work.rng, device, mixed)
    save_detections(det, work.file, frames_run)
    return StageOutput(work.path, work.key, cached=False, frames_run=frames_run)


SHARD_CHUNK = 16  # a shard's images per model call on the CPU (chunks run side by side, `cpu_streams`)


def model_key(config: SegmentConfig) -> str:
    """What an image's raw output depends on besides its content: weights, score floor, precision."""
    parts = ("raw-image", RAW_FORMAT, config.model.model_id, config.score_floor)
    return key_of(*parts, "float16") if config.mixed_precision else key_of(*parts)


def segment_shard(config: SegmentConfig, work: Work) -> StageOutput:
    """Segment a shard's images (frame i = member i) and save their raw detections in one
    file, unless saved already. An image whose raw output another shard's file holds
    (same content digest, same `model_key`) is taken from there, not segmented again.

    Images of one size go `config.batch_size` per forward, as a video's frames do (one
    image per forward cost the CPU model ~30% more per frame; bench/RESULTS.md, stop 16),
    in chunks of `SHARD_CHUNK` run side by side on the CPU's model streams.
    """
    if work.file.exists():
        return StageOutput(work.path, work.key, cached=True, per_member=(0,) * work.video.frame_count)
    members = work.video.members
    found = earlier_raw(work.file, model_key(config), [m.video_id for m in members])
    todo: dict[tuple[int, int], list[int]] = {}  # (height, width) -> members to segment
    for i, m in enumerate(members):
        if i not in found:
            todo.setdefault((m.height, m.width), []).append(i)
    device = task_device(config)
    mixed = config.mixed_precision and device.type == "cuda"
    chunks = [ii[lo:lo + SHARD_CHUNK] for ii in todo.values() for lo in range(0, len(ii), SHARD_CHUNK)]
    streams = cpu_streams()[0] if device.type == "cpu" else 1
    with ThreadPoolExecutor(max(1, min(streams, len(chunks)))) as pool:
        for ii, det in zip(chunks, pool.map(lambda ii: _chunk(config, [members[i] for i in ii], device, mixed), chunks)):
            found.update({i: det.take(np.flatnonzero(det.frame == n)) for n, i in enumerate(ii)})
    segmented = {i for ii in chunks for i in ii}
    ran = tuple(int(i in segmented) for i in range(len(members)))
    det = Detections.concat([replace(found[i], frame=np.full(len(found[i]), i, np.int64)) for i in range(len(members))])
    det.thumbs = None  # a shard's images are not a video: no shot cuts
    meta = {"model": model_key(config), "members": [m.video_id for m in members]}
    save_detections(det, work.file, sum(ran), meta=meta)
    return StageOutput(work.path, work.key, cached=False, frames_run=sum(ran), per_member=ran)


def _chunk(config: SegmentConfig, videos: list[VideoInfo], device: Device, mixed: bool) -> Detections:
    """Same-size images segmented together (frame = position), one by one after running out of memory."""
    try:
        return images_somewhere(config, videos, device, mixed)
    except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is one
        from segflow.models.runner import is_out_of_memory

        if not is_out_of_memory(exc) or len(videos) == 1:
            raise
    alone = [images_somewhere(config, [v], device, mixed) for v in videos]
    return Detections.concat([replace(d, frame=np.full(len(d), n, np.int64)) for n, d in enumerate(alone)])


def earlier_raw(path, model: str, video_ids: list[str]) -> dict[int, Detections]:
    """Member position -> raw detections (frame 0) of the images among `video_ids` that
    other shards' raw files beside `path` hold for the same `model` key."""
    want = {vid: i for i, vid in enumerate(video_ids)}
    where: dict = {}  # file -> [(position in that shard, position here)]
    try:
        others = [p for p in path.parent.glob("*.pq") if p.name != path.name]
    except (OSError, NotImplementedError):
        others = []
    for other in others:
        meta = _raw_meta(str(other))
        if not meta or meta.get("model") != model:
            continue
        for j, vid in enumerate(meta.get("members") or ()):
            if vid in want:
                where.setdefault(other, []).append((j, want.pop(vid)))
    found: dict[int, Detections] = {}
    for other, pairs in where.items():
        try:
            det = load_detections(other)
        except (OSError, ValueError, KeyError):  # pruned meanwhile, or torn: segmented again
            continue
        for j, i in pairs:
            one = det.take(np.flatnonzero(det.frame == j))
            found[i] = replace(one, frame=np.zeros(len(one), np.int64))
    return found


@functools.lru_cache(maxsize=4096)
def _raw_meta(path: str) -> dict | None:
    # A raw file never changes once written (its name is its content's key).
    return detections_meta(stored_path(path))


def images_somewhere(config: SegmentConfig, videos: list[VideoInfo], device: Device, mixed: bool) -> Detections:
    """`segment_same_size` in the device's model process (a GPU), or in this process."""
    if in_worker(config, device):
        try:
            return worker.images_in_worker(config.model_spec, config.model.digest, device, videos, config.batch_size,
                                           config.score_floor, mixed)
        except worker.NotInWorker as exc:
            _log.warning("the model process cannot load %s (%s): segmenting in this process", config.model_spec, exc)
            _IN_PROCESS.add(config.model_spec)
    from segflow.models.runner import segment_same_size  # torch: only when the model runs here

    with model_slot(device):
        return segment_same_size(config.model, videos, device, config.batch_size, config.score_floor, mixed)


def in_worker(config: SegmentConfig, device: Device) -> bool:
    """Whether ranges go to the device's model process (a GPU's; `models/worker.py`)."""
    return worker.wanted(device) and config.model_spec not in _IN_PROCESS


_IN_PROCESS: set[str] = set()  # models the worker process could not resolve


def segment_somewhere(config: SegmentConfig, video: VideoInfo, rng: FrameRange, device: Device,
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
    from segflow.models.runner import segment_with  # torch: only when the model runs here

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
    where=lambda layout, work: layout.stage_file("raw", work.video, work.rng, work.key),
    cached=cached_raw, ranges_per_task=1, tasks_in_flight=model_streams,
)
"""The model's queue: ranges in order, each alone (a video's range, or a shard of images)."""
