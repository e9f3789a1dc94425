"""A stand-in for `imageio_ffmpeg.write_frames` on machines without imageio-ffmpeg.

The lent GPU machines have OpenCV but no imageio-ffmpeg (and no network to install it),
so `bench/gpu_check.sh` puts this folder on PYTHONPATH to let `segflow.synth` write its
clips there: MPEG-4 part 2 through OpenCV's bundled FFmpeg instead of h264 through the
ffmpeg binary. Frames, masks and annotations are the same; only the codec differs.
Never imported where the real package is installed.
"""

from __future__ import annotations

from collections.abc import Generator

import numpy as np


def write_frames(path: str, size: tuple[int, int], fps: float = 25.0, **_ignored) -> Generator[None, np.ndarray | None, None]:
    """A generator taking RGB frames by `send`, as imageio_ffmpeg's (start with `send(None)`)."""
    import cv2

    width, height = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path} (mp4v)")
    try:
        while True:
            frame = yield
            if frame is not None:
                rgb = np.asarray(frame, np.uint8).reshape(height, width, 3)
                writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
