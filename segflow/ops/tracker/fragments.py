"""Split shapes: an object cut in parts by an occluder is often detected as several
instances. A new track born touching a same-class track matched on the same frame is
recorded as that track's *fragment*: a detection that covers most of both is the
parent's (see `matching.match_iou`), the fragment ends when the parent's mask covers it
again, and it becomes independent once seen apart from its parent.
"""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils

from segflow.ops.tracker.state import FrameDetections, Track


def margin(t: Track) -> float:
    """How far apart (px) a fragment may be from its parent: occluder bars leave a gap."""
    return 4.0 + 0.25 * t.extent


def touch(a: np.ndarray, b: np.ndarray, grow: float) -> bool:
    """Whether boxes `a` and `b` ``(4,)`` overlap once grown by `grow` px."""
    return bool(a[0] - grow < b[2] and b[0] - grow < a[2] and a[1] - grow < b[3] and b[1] - grow < a[3])


def parent_of(dets: FrameDetections, d: int, matched: list[tuple[Track, int]]) -> int:
    """The track a new detection `d` split off from: a same-class track matched on this
    frame (`matched`: track and its detection) to a detection whose box touches this
    one (a shape cut in parts by an occluder, or a partial duplicate), else 0. The
    nearest such track wins."""
    best, best_d = 0, np.inf
    box = dets.boxes[d]
    for t, j in matched:
        if t.label == dets.labels[d] and touch(box, dets.boxes[j], margin(t)):
            gap = np.linalg.norm((box[:2] + box[2:]) / 2 - (dets.boxes[j][:2] + dets.boxes[j][2:]) / 2)
            if gap < best_d:
                best, best_d = t.track_id, gap
    return best


def merged_fragments(
    shifted: list[dict], parents: np.ndarray, done_t: set[int], updates: list[tuple[int, FrameDetections, int]]
) -> set[int]:
    """Unmatched fragments that their parent's new mask covers: the parts became whole again.

    Args:
        shifted: each track's predicted mask (RLEs).
        parents: ``(len(tracks),)`` int64 position of each track's parent, or -1.
        done_t: the tracks matched on this frame.
        updates: this frame's matches (track, detections, detection).

    Returns:
        Positions of the fragments to end.
    """
    got = {t: (dets, d) for t, dets, d in updates}
    out = set()
    for f, p in enumerate(parents):
        if p < 0 or f in done_t or p not in got:
            continue
        dets, d = got[p]
        cover = mask_utils.iou([shifted[f]], [dets.rles[d]], [1])  # intersection / fragment area
        if float(np.asarray(cover).ravel()[0]) >= 0.5:
            out.add(f)
    return out


def release_fragments(tracks: list[Track], frame: int) -> None:
    """A fragment whose parent is gone, or seen apart from it, becomes an object of its own.

    "Apart" is judged only on a frame where both were seen: a lost fragment's box
    is stale and says nothing.
    """
    by_id = {t.track_id: t for t in tracks}
    for t in tracks:
        p = by_id.get(t.parent)
        if not t.parent:
            continue
        if p is None:
            t.parent = 0
        elif t.last_frame == p.last_frame == frame and not touch(t.box, p.box, margin(p)):
            t.parent = 0
