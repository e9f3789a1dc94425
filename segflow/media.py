"""Exact presentation times of a video's frames, from its container's time base."""

from __future__ import annotations

import functools
import os
from fractions import Fraction

import numpy as np


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
