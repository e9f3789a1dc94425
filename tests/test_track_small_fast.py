"""The tracker on small, fast objects: a turn seen only on weak detections keeps the id."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils
import pytest

from segflow.ops.tracker import Tracker, assign_ids
from segflow.ops.tracker import core

H, W = 120, 320


def square(cx: float, cy: float, half: float = 7.0) -> dict:
    m = np.zeros((H, W), np.uint8)
    m[int(cy - half):int(cy + half), int(cx - half):int(cx + half)] = 1
    return mask_utils.encode(np.asfortranarray(m))


def bounce(t: int) -> float:
    """x of a 14 px object at 12 px/frame that turns back at frame 9 (a wall, a bounce)."""
    return 100 + 12 * t if t <= 9 else 208 - 12 * (t - 9)


def bounce_detections(weak_frames: range, first: int = 7):
    """Kept detections of the bouncing object from frame `first` except on `weak_frames`,
    where the model only gives weak (second-pass) detections; a still object elsewhere.
    Seen on three frames before it turns (7-9), its speed is too new to widen the
    re-identification gate (below): only the weak detections can carry it."""
    frames, rles, truth, low_frames, low_rles = [], [], [], [], []
    for t in range(24):
        if t < first:
            pass
        elif t in weak_frames:
            low_frames.append(t), low_rles.append(square(bounce(t), 60))
        else:
            frames.append(t), rles.append(square(bounce(t), 60)), truth.append(1)
        frames.append(t), rles.append(square(280, 20)), truth.append(2)  # a still object far away
    return (np.array(frames), np.ones(len(frames), np.int64), rles, np.array(truth),
            np.array(low_frames), np.ones(len(low_frames), np.int64), low_rles)


def test_a_small_fast_object_turning_on_weak_detections_keeps_its_id():
    frames, labels, rles, truth, lf, ll, lr = bounce_detections(range(10, 17))
    ids = assign_ids(frames, labels, rles, Tracker(), lf, ll, lr)
    assert len(set(ids[truth == 1].tolist())) == 1, ids[truth == 1]  # one id before and after the turn
    assert len(set(ids.tolist())) == 2


def test_without_the_weak_re_identification_the_turn_breaks_the_id(monkeypatch):
    """The scenario above needs the weak pass: with it off (gap 0), the object comes back as a new id."""
    monkeypatch.setattr(core, "WEAK_REID_GAP", 0)
    frames, labels, rles, truth, lf, ll, lr = bounce_detections(range(10, 17))
    ids = assign_ids(frames, labels, rles, Tracker(), lf, ll, lr)
    assert len(set(ids[truth == 1].tolist())) == 2


@pytest.mark.parametrize("other_label", [2])
def test_a_weak_detection_of_another_class_does_not_keep_a_lost_track(other_label):
    """The weak pass stays within the track's class: a weak detection of another class
    near where a track was lost does not keep it alive (nor move it)."""
    frames, labels, rles, truth, lf, ll, lr = bounce_detections(range(10, 17))
    ids = assign_ids(frames, labels, rles, Tracker(), lf, np.full(len(ll), other_label), lr)
    assert len(set(ids[truth == 1].tolist())) == 2


def kept_only(seen: range, back: range):
    """The bouncing object kept on `seen` and `back` frames only (missed in between, no weak detections)."""
    frames = np.array(list(seen) + list(back))
    return frames, np.ones(len(frames), np.int64), [square(bounce(int(t)), 60) for t in frames]


def test_a_fast_object_missed_while_it_turned_is_re_identified_within_its_speed():
    """Missed on frames 10-14 while it turned at frame 9: it comes back 72 px behind where it
    was last seen (and 144 px from where it was heading); its speed (12 px/frame over 10
    frames) puts that within reach, so it keeps its id."""
    frames, labels, rles = kept_only(range(0, 10), range(15, 24))
    ids = assign_ids(frames, labels, rles, Tracker())
    assert len(set(ids.tolist())) == 1, ids


def test_a_speed_seen_on_a_few_frames_only_does_not_widen_the_gate():
    """The same turn after only three frames seen (frames 7-9): a speed measured that briefly
    is not trusted that far, the object comes back as a new id."""
    frames, labels, rles = kept_only(range(7, 10), range(15, 24))
    ids = assign_ids(frames, labels, rles, Tracker())
    assert len(set(ids.tolist())) == 2, ids
