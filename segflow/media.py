"""Reading inputs: probe a video or image without decoding it, plan its frame ranges,
stream a range's frames in batches (used by the decode and segment stages), and the
exact presentation times of a video's frames from its container's time base."""

from __future__ import annotations

import dataclasses
import functools
import os
import queue
import threading
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from segflow.errors import SegflowError
from segflow.storage.fs import as_path, fetch, is_remote
from segflow.storage.keys import content_id
from segflow.contracts import FrameBatch, FrameRange, VideoInfo

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
MAX_IMAGE_PIXELS = 64_000_000  # refuse decompression bombs instead of swapping


def is_media(path: Path) -> bool:
    """Whether a file name looks like an image or video segflow can read."""
    return path.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES


def _video_reader(path: str, threads: int = 1):
    import decord  # local: decord is slow to import and images don't need it

    return decord.VideoReader(path, ctx=decord.cpu(0), num_threads=threads)


def probe(source: str | Path) -> VideoInfo:
    """Open an input far enough to know its kind, size and frame count.

    Raises SegflowError with one line naming the file when it is missing, empty,
    not an image or video, or undecodable.
    """
    if is_remote(as_path(source)):
        local = fetch(as_path(source))
        return dataclasses.replace(probe(local), source=str(source), local=str(local))
    path = Path(source)
    if not path.exists():
        raise SegflowError(f"input {source}: no such file")
    if path.is_dir():
        raise SegflowError(f"input {source}: is a folder, not an image or video")
    if path.stat().st_size == 0:
        raise SegflowError(f"input {source}: file is empty (0 bytes)")
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        width, height = _probe_image(path)
        return VideoInfo(str(path), content_id(path), "image", 1, width, height, 0.0)
    if suffix not in VIDEO_SUFFIXES:
        raise SegflowError(
            f"input {source}: not an image or video (known suffixes: "
            f"{', '.join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))})"
        )
    st = path.stat()
    return _probe_video(str(path), str(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=1024)
def _probe_video(source: str, resolved: str, size: int, mtime_ns: int) -> VideoInfo:
    """A video's VideoInfo; kept per file state (as `content_id`: the resolved path,
    size and mtime are the cache key), so validating and rerunning in one process open
    the decoder once."""
    path = Path(source)
    _check_container(source)
    try:
        vr = _video_reader(str(path))
        count = len(vr)
        height, width = vr[0].shape[:2] if count else (0, 0)
        fps = float(vr.get_avg_fps())
    except Exception as exc:  # decord raises bare DECORDError/RuntimeError
        raise SegflowError(f"input {source}: cannot decode video ({_first_line(exc)})") from None
    if count < 1 or width < 1:
        raise SegflowError(f"input {source}: video has no decodable frames")
    return VideoInfo(str(path), content_id(path), "video", count, width, height, fps)


def _check_container(source: str) -> None:
    """Refuse a file that is no video container, or has no video stream, before decord
    opens it: decord prints FFmpeg's and its own lines to stderr (fd 2, from C++) on such
    a file; PyAV only raises."""
    import av  # local: PyAV is only needed here

    try:
        with av.open(source) as container:
            if not container.streams.video:
                raise SegflowError(f"input {source}: cannot decode video (no video stream)")
    except (av.FFmpegError, OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or _first_line(exc)
        raise SegflowError(f"input {source}: cannot decode video ({reason})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _probe_image(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            width, height = im.size
            if width * height > MAX_IMAGE_PIXELS:
                raise SegflowError(
                    f"input {path}: image is {width}x{height}, above the {MAX_IMAGE_PIXELS:,} pixel limit"
                )
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise SegflowError(f"input {path}: cannot read image ({_first_line(exc)})") from None
    return width, height


def load_image(path: str | Path) -> np.ndarray:
    """An image as RGB uint8 (H, W, 3): grayscale, 16-bit and RGBA converted."""
    with Image.open(path) as im:
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im, dtype=np.float64)
            peak = 65535.0 if arr.max() > 255 else 255.0
            im = Image.fromarray((arr * (255.0 / peak)).clip(0, 255).astype(np.uint8))
        return np.array(im.convert("RGB"))


def local_copy(info: VideoInfo) -> str:
    """A local file with the input's bytes (fetched again on a machine that lacks it)."""
    if info.local and Path(info.local).exists():
        return info.local
    return str(fetch(as_path(info.source))) if is_remote(as_path(info.source)) else info.source


def read_batches(info: VideoInfo, rng: FrameRange, batch_size: int, threads: int = 1) -> Iterator[FrameBatch]:
    """Decode frames `rng.start..rng.end` of an input in batches of `batch_size`
    (`threads`: the decoder's own threads)."""
    path = local_copy(info)
    if info.kind == "image":
        yield FrameBatch(load_image(path)[None], np.zeros(1, np.int64), np.zeros(1))
        return
    vr = _video_reader(path, threads)
    for lo in range(rng.start, rng.end + 1, batch_size):
        idx = list(range(lo, min(lo + batch_size, rng.end + 1)))
        frames = vr.get_batch(idx).asnumpy()
        times = vr.get_frame_timestamp(idx)[:, 0].astype(np.float64)
        yield FrameBatch(frames, np.asarray(idx, np.int64), times)


def prefetch(batches: Iterator[FrameBatch], depth: int = 2) -> Iterator[FrameBatch]:
    """Run a batch iterator in a background thread, `depth` batches ahead.

    Decoding releases the GIL inside decord, so the next batch decodes while the
    model runs on the current one; the bounded queue keeps memory flat.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work() -> None:
        try:
            for item in batches:
                if stop.is_set():
                    return
                q.put(item)
            q.put(done)
        except BaseException as exc:  # hand decode errors to the consumer
            q.put(exc)

    thread = threading.Thread(target=work, daemon=True, name="segflow-decode")
    thread.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(0.05)


def input_ranges(video: VideoInfo, start_frame: int, end_frame: int | None, frames_per_range: int) -> list[FrameRange]:
    """The frame ranges of one input: frames `start_frame..end_frame` (None: to the last)
    of a video, aligned by `plan_ranges`; an end beyond a shorter video is that video's last
    frame, a start beyond it gives no range (the video has no frames in range); an image is frame 0 only, a shard of images one
    range of all its images (frame i: image i; the detection range is a video's setting)."""
    if video.kind == "image":
        return [FrameRange(0, 0)]
    if video.kind == "shard":
        return [FrameRange(0, video.frame_count - 1)]
    end = video.frame_count - 1 if end_frame is None else min(end_frame, video.frame_count - 1)
    return plan_ranges(start_frame, end, frames_per_range)


def plan_ranges(start: int, end: int, size: int) -> list[FrameRange]:
    """Split `start..end` into ranges aligned to multiples of `size`.

    Alignment keeps the interior ranges of an extended detection range identical to
    those of an earlier run, so their cached model output is reused.
    """
    ranges = []
    lo = start
    while lo <= end:
        hi = min(end, (lo // size + 1) * size - 1)
        ranges.append(FrameRange(lo, hi))
        lo = hi + 1
    return ranges


# ---- exact frame times --------------------------------------------------------------


def frame_timestamps(path: str | os.PathLike) -> np.ndarray:
    """Presentation time in seconds of every frame of a local video, as float64.

    Each time is `(pts - stream start) * time_base` computed as an exact fraction and
    rounded once to float64 (9.96 s is the double nearest 9.96, not a widened float32);
    frame i is the i-th smallest pts, as decoders number frames. Only packets are read
    (no decoding). Kept per file state, so every range of a video demuxes it once.

    Returns:
        (frame_count,) float64, seconds from the stream's first frame.
    """
    st = os.stat(path)
    return _timestamps(os.fspath(path), st.st_size, st.st_mtime_ns).copy()


@functools.lru_cache(maxsize=64)
def _timestamps(path: str, size: int, mtime_ns: int) -> np.ndarray:
    import av  # local: PyAV is only needed here

    with av.open(path) as container:
        stream = container.streams.video[0]
        base = Fraction(stream.time_base)
        start = stream.start_time
        pts = sorted(p.pts for p in container.demux(stream) if p.pts is not None)
    origin = start if start is not None else (pts[0] if pts else 0)
    return np.array([float((p - origin) * base) for p in pts], np.float64)


def times_of(path: str | os.PathLike, frame_count: int, frames: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """`frame_timestamps` at `frames` ((N,) int). Where the container cannot say (no pts,
    PyAV cannot open it, or its packet count is not the decoder's `frame_count`, so
    frame numbers might not line up), the decoder's `fallback` times ((N,) float) are kept.
    """
    import av  # local: PyAV is only needed here

    try:
        table = frame_timestamps(path)
    except (av.FFmpegError, OSError, ValueError, IndexError):
        table = None
    if table is None or len(table) != frame_count:
        return np.asarray(fallback, np.float64)
    return table[np.asarray(frames, np.int64)]
