"""One class per tracked object: a score-weighted vote over every frame of its track.

The persist stage votes range by range (`class_tally`, `merge_tallies`, `vote`) over
an input's whole track before writing any of its label files; `one_class_per_object`
gives a label table read from disk the same vote (tables written before there was one).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def class_tally(track_ids: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> dict[tuple[int, int], tuple[float, int]]:
    """Per (track id, label): the sum of scores and the count of detections.

    Args:
        track_ids: (N,) int track id of each detection.
        labels: (N,) int model label of each detection.
        scores: (N,) float score of each detection.
    Returns:
        {(track_id, label): (score_sum, count)}; tallies of several frame ranges add
        up with `merge_tallies`, so a video's vote can be made range by range.

    Example:
        >>> class_tally(np.array([1, 1, 1]), np.array([2, 3, 2]), np.array([0.9, 0.8, 0.7]))
        {(1, 2): (1.6, 2), (1, 3): (0.8, 1)}
    """
    out: dict[tuple[int, int], tuple[float, int]] = {}
    for t, lab, s in zip(np.asarray(track_ids, np.int64).tolist(), np.asarray(labels, np.int64).tolist(),
                         np.asarray(scores, np.float64).tolist()):
        total, n = out.get((t, lab), (0.0, 0))
        out[(t, lab)] = (total + s, n + 1)
    return out


def merge_tallies(tallies: list[dict[tuple[int, int], tuple[float, int]]]) -> dict[tuple[int, int], tuple[float, int]]:
    """The sum of several `class_tally` results (e.g. one per frame range of a video)."""
    out: dict[tuple[int, int], tuple[float, int]] = {}
    for tally in tallies:
        for key, (total, n) in tally.items():
            t0, n0 = out.get(key, (0.0, 0))
            out[key] = (t0 + total, n0 + n)
    return out


def vote(tally: dict[tuple[int, int], tuple[float, int]]) -> dict[int, int]:
    """Each track's class: the label with the highest score sum along the track.

    Ties (equal sums) go to the label seen on more frames, then to the smaller label,
    so the result is a pure function of the detections (the same after any resume).

    Returns:
        {track_id: label}.

    Example:
        >>> vote({(1, 2): (1.6, 2), (1, 3): (0.8, 1), (4, 1): (0.5, 1)})
        {1: 2, 4: 1}
    """
    best: dict[int, tuple[float, int, int]] = {}
    for (t, lab), (total, n) in sorted(tally.items()):
        rank = (round(total, 9), n, -lab)  # rounded: sums added in another order stay equal
        if t not in best or rank > best[t]:
            best[t] = rank
    return {t: -rank[2] for t, rank in best.items()}


def one_class_per_object(df: pd.DataFrame) -> pd.DataFrame:
    """The table with one class_name and feature_hash per (video_id, object_id).

    Tables segflow writes have that already (voted over the track when labeled); one
    written before (or edited by hand) gets the same vote here, so every export names
    one class per object: the class with the highest score sum (ties: more frames,
    then the name)."""
    if df.empty or not (df.groupby(["video_id", "object_id"])["class_name"].nunique() > 1).any():
        return df
    stats = (df.groupby(["video_id", "object_id", "class_name", "feature_hash"])["confidence"]
             .agg(["sum", "size"]).reset_index())
    stats["sum"] = stats["sum"].round(6)
    stats = stats.sort_values(["sum", "size", "class_name"], ascending=[False, False, True])
    best = stats.drop_duplicates(["video_id", "object_id"])[["video_id", "object_id", "class_name", "feature_hash"]]
    out = df.drop(columns=["class_name", "feature_hash"]).merge(best, on=["video_id", "object_id"], how="left")
    return out[df.columns]
