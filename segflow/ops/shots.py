"""Hard shot cuts: where a video's picture changes all at once (an edit), so no object
carries over from the frame before.

PySceneDetect's content detector idea (``ContentDetector``: mean absolute difference of
consecutive frames in HSV, threshold 27 on the 0-255 scale), on a small thumbnail of
each frame. The segment stage, which has the pixels, keeps one thumbnail per frame
(`frame_thumbnail`); the track stage, which sees every frame in order, decides the cuts
(`cut_frames`) and ends every track there. Pure numpy and OpenCV: no Prefect, no disk.
"""

from __future__ import annotations

import cv2
import numpy as np

THUMB = 16  # thumbnail side in pixels: (16, 16, 3) uint8 per frame, 768 bytes
CUT_THRESHOLD = 27.0  # PySceneDetect ContentDetector's default threshold (mean HSV difference, 0-255)


def frame_thumbnail(image: np.ndarray, side: int = THUMB) -> np.ndarray:
    """A frame's HSV thumbnail: subsampled to at least 8x `side`, shrunk by area averaging, then converted to HSV
    (OpenCV's scale: H 0-179, S and V 0-255).

    Args:
        image: ``(H, W, 3)`` uint8 RGB frame.

    Returns:
        ``(side, side, 3)`` uint8.
    """
    step = max(1, min(image.shape[:2]) // (8 * side))  # every step-th pixel first: 8x the thumbnail's side left
    small = cv2.resize(np.ascontiguousarray(image[::step, ::step]), (side, side), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_RGB2HSV)


def content_change(thumbs: np.ndarray, previous: np.ndarray | None = None) -> np.ndarray:
    """Mean absolute HSV difference of each thumbnail to the one before it (the three
    channels weighted alike, as ContentDetector's default; hue on OpenCV's 0-179 scale,
    taken the short way round its circle).

    Args:
        thumbs: ``(F, S, S, 3)`` uint8 thumbnails of consecutive frames.
        previous: ``(S, S, 3)`` thumbnail of the frame before the first, or None.

    Returns:
        ``(F,)`` float64 scores (0-255 scale); the first is 0 when `previous` is None.
    """
    t = np.asarray(thumbs, np.int16)
    if len(t) == 0:
        return np.zeros(0, np.float64)
    before = np.concatenate([t[:1] if previous is None else np.asarray(previous, np.int16)[None], t[:-1]])
    diff = np.abs(t - before).astype(np.float64)
    diff[..., 0] = np.minimum(diff[..., 0], 180 - diff[..., 0])  # hue 0-179 is a circle
    return diff.mean(axis=(1, 2, 3))


def cut_frames(frames: np.ndarray, thumbs: np.ndarray, previous: np.ndarray | None = None,
               threshold: float = CUT_THRESHOLD) -> np.ndarray:
    """The frames that begin a new shot: their `content_change` exceeds `threshold`.

    Args:
        frames: ``(F,)`` int frame numbers, increasing (the frames the thumbnails are of).
        thumbs: ``(F, S, S, 3)`` their thumbnails (`frame_thumbnail`).
        previous: the thumbnail of the frame before ``frames[0]``, or None (no cut there).
        threshold: score above which a frame is a cut; <= 0 turns cut detection off.

    Returns:
        ``(K,)`` int64 frame numbers.
    """
    frames = np.asarray(frames, np.int64)
    if threshold <= 0 or len(frames) == 0:
        return np.zeros(0, np.int64)
    return frames[content_change(thumbs, previous) > threshold]
