"""Short test clips the tests make themselves: flat-colored shapes on a noisy background.

Colors encode the class so `ColorModel` (conftest) can segment them exactly:
red = circle, green = square, blue = ring. A dark vertical bar is an occluder.
"""

from __future__ import annotations

from pathlib import Path

import imageio_ffmpeg
import numpy as np

RED, GREEN, BLUE, BAR = (230, 30, 30), (30, 210, 40), (40, 60, 230), (20, 20, 20)


def disk(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def ring(h: int, w: int, cy: float, cx: float, r: float) -> np.ndarray:
    return disk(h, w, cy, cx, r) & ~disk(h, w, cy, cx, r * 0.5)


def square(h: int, w: int, cy: float, cx: float, half: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return (np.abs(yy - cy) <= half) & (np.abs(xx - cx) <= half)


def render(n_frames: int = 12, h: int = 240, w: int = 320, seed: int = 0, occluder: bool = True):
    """Frames (uint8 RGB) of a moving circle, a ring with a hole and a square behind a bar."""
    rng = np.random.default_rng(seed)
    frames = []
    for t in range(n_frames):
        img = np.full((h, w, 3), 120, np.int16) + rng.integers(-8, 9, (h, w, 1))
        img[disk(h, w, 60, 40 + 6 * t, 22)] = RED
        img[ring(h, w, 170, 250 + 3 * t, 34)] = BLUE
        img[square(h, w, 80, 200, 30)] = GREEN
        if occluder:
            img[:, 196:206] = BAR  # splits the square into two visible parts
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return frames


def write_mp4(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    """Write frames as an h264 mp4 with imageio-ffmpeg's bundled ffmpeg."""
    h, w = frames[0].shape[:2]
    writer = imageio_ffmpeg.write_frames(
        str(path), (w, h), fps=fps, codec="libx264", quality=None,
        output_params=["-crf", "10", "-g", "4"], macro_block_size=16, pix_fmt_out="yuv420p",
    )
    writer.send(None)
    for f in frames:
        writer.send(np.ascontiguousarray(f))
    writer.close()
    return path
