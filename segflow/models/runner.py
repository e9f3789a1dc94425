"""Running the model over a frame range or a batch of images: `Detections` (masks as COCO
RLE) out, over `segflow.models.inference.segment_batches` (the batch loop).

The segment stage (tasks/segment.py) and the device's model process (`worker.py`) both
run through these: a range with out-of-memory halving and the decode policy
(`segment_range`), same-size images batched (`segment_same_size`), and handing freed
heap pages back (`release_free_memory`).
"""

from __future__ import annotations

import collections
from collections.abc import Iterator

import numpy as np
import torch
from prefect.logging import get_logger

from segflow.contracts import Detections, FrameBatch, FrameRange, VideoInfo
from segflow.media import load_image, local_copy, prefetch, read_batches
from segflow.models.inference import segment_batches
from segflow.models.registry import load_model, usable_cores
from segflow.settings import env_switch

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


def decode_threads(device: torch.device) -> int:
    """Decoder threads of a range: one on the CPU, where the model needs the cores, and a
    few on a GPU, where one thread decoding 720p h264 can fall behind the model."""
    if device.type != "cuda":
        return 1
    return max(1, min(4, usable_cores() // 2))


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
