"""The `object_id` strings of the label table, from track ids."""

from __future__ import annotations

import numpy as np


def object_ids(video_id: str, frames: np.ndarray, track_ids: np.ndarray, tracking: bool) -> list[str]:
    """The `object_id` strings: one per track, or one per instance when tracking is off.

    Args:
        video_id: the input's id (its first 8 characters prefix every id).
        frames: ``(N,)`` frame of each row.
        track_ids: ``(N,)`` track id of each row (ignored when tracking is off).
        tracking: whether the ids come from tracks.

    Returns:
        N strings: ``<video>-t<track:05d>``, or ``<video>-f<frame:06d>-<k:03d>`` for the
        k-th row of a frame when tracking is off.
    """
    if tracking:
        return [f"{video_id[:8]}-t{t:05d}" for t in track_ids]
    seen: dict[int, int] = {}
    out = []
    for f in frames:
        k = seen.get(int(f), 0)
        seen[int(f)] = k + 1
        out.append(f"{video_id[:8]}-f{int(f):06d}-{k:03d}")
    return out
