"""The `object_id` strings of the label table, from track ids, and which short tracks
the table leaves out."""

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


def track_lengths(track_ids: np.ndarray, frames: np.ndarray) -> dict[int, tuple[int, int, int]]:
    """Per track: (frames seen on, first frame, last frame).

    Args:
        track_ids: ``(N,)`` track id of each row (one row per track per frame).
        frames: ``(N,)`` frame of each row.

    Returns:
        {track id: (count, first, last)}; several frame ranges' results combine with
        `merge_lengths`.
    """
    out: dict[int, tuple[int, int, int]] = {}
    for t, f in zip(np.asarray(track_ids, np.int64).tolist(), np.asarray(frames, np.int64).tolist()):
        n, lo, hi = out.get(t, (0, f, f))
        out[t] = (n + 1, min(lo, f), max(hi, f))
    return out


def merge_lengths(parts: list[dict[int, tuple[int, int, int]]]) -> dict[int, tuple[int, int, int]]:
    """`track_lengths` of several frame ranges of one input, combined."""
    out: dict[int, tuple[int, int, int]] = {}
    for part in parts:
        for t, (n, lo, hi) in part.items():
            n0, lo0, hi0 = out.get(t, (0, lo, hi))
            out[t] = (n0 + n, min(lo0, lo), max(hi0, hi))
    return out


def short_tracks(lengths: dict[int, tuple[int, int, int]], min_length: int, first: int, last: int) -> set[int]:
    """The tracks the label table leaves out: seen on fewer than `min_length` frames (a
    model's blink: a few frames of another class beside the object's own detection, a
    spurious detection), unless seen on the first or the last labeled frame (`first`,
    `last`): cut there, they may be longer.

    Args:
        lengths: `track_lengths` of the whole input.
        min_length: the minimum track length (1 keeps every track).
        first: the first labeled frame.
        last: the last labeled frame.

    Returns:
        The track ids to drop.

    Example:
        >>> sorted(short_tracks({1: (40, 0, 39), 2: (2, 10, 11), 3: (1, 39, 39), 4: (2, 36, 37)}, 4, 0, 39))
        [2, 4]
    """
    return {t for t, (n, lo, hi) in lengths.items() if n < min_length and lo > first and hi < last}
