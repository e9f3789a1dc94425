"""The tracker's appearance cue: mean colour under each mask, measured on the frame and
used where motion cannot tell two same-class objects apart."""

from __future__ import annotations

import json

import numpy as np
import pycocotools.mask as mask_utils
import pytest

from segflow.contracts import Detections
from segflow.ops.appearance import mask_colors
from segflow.ops.rle import rle_boxes
from segflow.ops.tracker import Tracker, TrackerConfig, assign_ids

H, W = 120, 160
RED, BLUE = (220.0, 40.0, 40.0), (40.0, 60.0, 220.0)


def disk(cx: float, cy: float, r: float = 10.0) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def rle(mask: np.ndarray) -> dict:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


@pytest.mark.parametrize("seed", range(3))
def test_mask_colors_are_the_mean_of_the_pixels_under_each_mask(seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    masks = [rng.random((H, W)) < 0.2, disk(20, 30, 7), np.zeros((H, W), bool)]
    masks[0][-1, -1] = True  # a run of ones ending the last column
    got = mask_colors(image, [rle(m) for m in masks])
    assert got.shape == (3, 3) and got.dtype == np.float32
    for m, g in zip(masks[:2], got[:2]):
        np.testing.assert_allclose(g, image[m].mean(axis=0), rtol=1e-5)
    assert np.isnan(got[2]).all()  # empty mask: unknown
    assert mask_colors(image, []).shape == (0, 3)
    with pytest.raises(ValueError, match="frame"):
        mask_colors(image[:50], [rle(masks[1])])


def meet_and_turn_back(colour_b):
    """Two same-size discs (A red, B `colour_b`) come towards each other, are seen as one
    shape for 8 frames (A in front), and go back where they came from: constant velocity
    predicts a crossing. Rows (frames, labels, rles, colours) and each row's true object."""
    rows = []
    for f in range(34):
        if f <= 14:
            a, b = 30 + 3 * f, 130 - 3 * f
        elif f <= 22:
            a, b = 76, 84
        else:
            a, b = 76 - 3 * (f - 22), 84 + 3 * (f - 22)
        ma, mb = disk(a, 60), disk(b, 60)
        if f in range(15, 23):  # one shape: its colour is the mix of what each shows
            share = ma.sum() / (ma | mb).sum()
            mix = share * np.array(RED) + (1 - share) * np.array(colour_b)
            rows.append((f, ma | mb, mix, 1))
        else:
            rows.append((f, ma, RED, 1))
            rows.append((f, mb & ~ma, colour_b, 2))
    frames = np.array([r[0] for r in rows], np.int64)
    return (frames, np.ones(len(rows), np.int64), [rle(r[1]) for r in rows],
            np.array([r[2] for r in rows], np.float64), np.array([r[3] for r in rows], np.int64))


def test_objects_that_meet_and_turn_back_keep_their_ids_by_colour():
    frames, labels, rles, colours, truth = meet_and_turn_back(BLUE)
    ids = assign_ids(frames, labels, rles, Tracker(TrackerConfig()), colors=colours)
    after = frames >= 24
    for obj in (1, 2):
        before_ids = set(ids[(truth == obj) & (frames <= 12)].tolist())
        after_ids = set(ids[(truth == obj) & after].tolist())
        assert len(before_ids) == 1 and before_ids == after_ids, (obj, before_ids, after_ids)
    # the shape the two make is the front one's (A: most of its colour) while the predictions cover it
    # (both tracks coast on, so towards the end of the 8 frames they no longer do)
    a_id = ids[(truth == 1) & (frames == 0)][0]
    assert (ids[(frames >= 15) & (frames <= 22)] == a_id).sum() >= 6
    # without colours, constant velocity hands each id to the other object
    plain = assign_ids(frames, labels, rles, Tracker(TrackerConfig()))
    assert set(plain[(truth == 1) & after].tolist()) != {plain[(truth == 1) & (frames == 0)][0]}


def test_objects_of_one_colour_track_as_without_colours():
    frames, labels, rles, colours, _ = meet_and_turn_back(RED)
    with_colour = assign_ids(frames, labels, rles, Tracker(TrackerConfig()), colors=colours)
    without = assign_ids(frames, labels, rles, Tracker(TrackerConfig()))
    np.testing.assert_array_equal(with_colour, without)


def test_colour_off_tracks_as_without_colours():
    frames, labels, rles, colours, _ = meet_and_turn_back(BLUE)
    off = TrackerConfig(color_separation=0.0)
    np.testing.assert_array_equal(assign_ids(frames, labels, rles, Tracker(off), colors=colours),
                                  assign_ids(frames, labels, rles, Tracker(off)))


def test_a_tracker_with_colours_continues_exactly_from_its_saved_state():
    frames, labels, rles, colours, _ = meet_and_turn_back(BLUE)
    straight = assign_ids(frames, labels, rles, Tracker(TrackerConfig()), colors=colours)
    first = frames <= 18  # cut inside the merge
    tracker = Tracker(TrackerConfig())
    a = assign_ids(frames[first], labels[first], [r for r, k in zip(rles, first) if k], tracker, colors=colours[first])
    state = json.loads(json.dumps(tracker.state()))
    assert any(t["color"] is not None for t in state["tracks"])
    resumed = Tracker.from_state(TrackerConfig(), state)
    b = assign_ids(frames[~first], labels[~first], [r for r, k in zip(rles, first) if not k], resumed,
                   colors=colours[~first])
    np.testing.assert_array_equal(np.concatenate([a, b]), straight)


def test_raw_detections_keep_their_colours_on_disk(tmp_path):
    from segflow.storage.table import load_detections, save_detections

    rles = [rle(disk(40, 40)), rle(disk(90, 60))]
    det = Detections(np.array([0, 0]), np.zeros(2), np.array([1, 2]), np.array([0.9, 0.8], np.float32),
                     rle_boxes(rles).astype(np.float32), rles, np.array([RED, BLUE], np.float32))
    save_detections(det, tmp_path / "raw.parquet", 1)
    back = load_detections(tmp_path / "raw.parquet")
    np.testing.assert_array_equal(back.color, det.color)
    np.testing.assert_array_equal(back.take(np.array([1])).color, det.color[1:])
    det.color = None  # a file written without colours reads back without them
    save_detections(det, tmp_path / "plain.parquet", 1)
    assert load_detections(tmp_path / "plain.parquet").color is None
