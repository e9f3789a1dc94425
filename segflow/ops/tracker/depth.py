"""Which of two crossing objects is in front, from what the detections leave visible.

When two tracks' predicted masks overlap and both are detected, the overlap is
visible only on the object in front: the detection that covers most of the overlap
is the front one's. The tracker remembers the order (`Track.front_of`), and when the
two are later seen as one shape (a detection covering both predictions), that shape is
the front object's: the one behind is hidden.
"""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils

from segflow.ops.tracker.state import FrameDetections, Track

MIN_OVERLAP_PX = 6  # predicted overlap smaller than this says nothing about the order
MIN_MARGIN = 0.3  # one detection must cover this much more of the overlap than the other


def observe_depth(
    tracks: list[Track], shifted: list[dict], matches: list[tuple[int, int]], dets: FrameDetections
) -> None:
    """Record the front/behind order of matched tracks whose predictions overlap.

    Args:
        tracks: the live tracks (their `front_of` lists are updated in place).
        shifted: each track's predicted mask (RLEs).
        matches: (track, detection) pairs of this frame, detections from `dets`.
        dets: the frame's detections.
    """
    boxes = {t: dets.boxes[d] for t, d in matches}
    for i, (a, da) in enumerate(matches):
        for b, db in matches[i + 1:]:
            ba, bb = boxes[a], boxes[b]
            if ba[0] >= bb[2] + 8 or bb[0] >= ba[2] + 8 or ba[1] >= bb[3] + 8 or bb[1] >= ba[3] + 8:
                continue
            overlap = mask_utils.merge([shifted[a], shifted[b]], intersect=True)
            if int(mask_utils.area(overlap)) < MIN_OVERLAP_PX:
                continue
            cover = np.asarray(mask_utils.iou([overlap], [dets.rles[da], dets.rles[db]], [1, 1]), np.float64).ravel()
            if cover[0] - cover[1] >= MIN_MARGIN:
                _in_front(tracks[a], tracks[b])
            elif cover[1] - cover[0] >= MIN_MARGIN:
                _in_front(tracks[b], tracks[a])


def _in_front(front: Track, back: Track) -> None:
    if back.track_id not in front.front_of:
        front.front_of.append(back.track_id)
    if front.track_id in back.front_of:
        back.front_of.remove(front.track_id)


def forget(tracks: list[Track]) -> None:
    """Drop order entries about tracks that are gone."""
    alive = {t.track_id for t in tracks}
    for t in tracks:
        t.front_of = [i for i in t.front_of if i in alive]
