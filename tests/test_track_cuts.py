"""Shot cuts: tracks end where the picture changes all at once (an edit), and nowhere else."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pycocotools.mask as mask_utils
import pytest

from segflow.ops.shots import CUT_THRESHOLD, content_change, cut_frames, frame_thumbnail
from segflow.ops.tracker import Tracker, assign_ids
from tests import clips

YELLOW = (235, 215, 70)  # the second shot's backdrop: none of the test model's class colours


def cut_clip(n_frames: int, cut: int) -> list[np.ndarray]:
    """The test clip's shapes, at the same places throughout, filmed as two shots: the
    usual grey backdrop before frame `cut`, a yellow one from it on (a hard cut)."""
    frames = clips.render(n_frames=n_frames)
    out = []
    for t, img in enumerate(frames):
        if t >= cut:
            img = img.copy()
            backdrop = (np.abs(img.astype(np.int16) - 120) <= 8).all(axis=2)  # the noisy grey
            img[backdrop] = YELLOW
        out.append(img)
    return out


def thumbs(frames: list[np.ndarray]) -> np.ndarray:
    return np.stack([frame_thumbnail(f) for f in frames])


def test_a_hard_cut_is_found_and_motion_is_not():
    frames = cut_clip(16, 10)
    assert cut_frames(np.arange(16), thumbs(frames)).tolist() == [10]
    # the frame before a range's first comes from the previous range
    assert cut_frames(np.arange(10, 16), thumbs(frames[10:]), frame_thumbnail(frames[9])).tolist() == [10]
    assert cut_frames(np.arange(10, 16), thumbs(frames[10:])).tolist() == []  # no frame before: no cut
    assert cut_frames(np.arange(16), thumbs(frames), threshold=0).tolist() == []  # off
    # moving shapes in one shot stay far below the threshold
    still = content_change(thumbs(clips.render(n_frames=16)))
    assert still.max() < CUT_THRESHOLD / 5


def test_fast_motion_is_no_cut():
    """A bright disc crossing the whole frame in a few steps (fast motion) is no cut."""
    h, w = 240, 320
    frames = []
    for t in range(6):
        img = np.full((h, w, 3), 90, np.uint8)
        img[clips.disk(h, w, 120, 30 + 55 * t, 40)] = clips.RED
        frames.append(img)
    assert cut_frames(np.arange(6), thumbs(frames)).tolist() == []


def disk_rle(cx: float) -> dict:
    m = clips.disk(120, 160, 60, cx, 12)
    return mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))


def test_assign_ids_ends_every_track_at_a_cut():
    frames = np.arange(12)
    rles = [disk_rle(30 + 2 * t) for t in frames]
    labels = np.ones(12, np.int64)
    plain = assign_ids(frames, labels, rles, Tracker())
    assert len(set(plain.tolist())) == 1
    cut = assign_ids(frames, labels, rles, Tracker(), cuts=np.array([6]))
    assert len(set(cut[:6].tolist())) == 1 and len(set(cut[6:].tolist())) == 1 and cut[0] != cut[6]
    # a cut on a frame with no detections (a gap) or after the last one still ends the tracks
    gap = np.r_[0:5, 7:12]
    ids = assign_ids(gap, labels[gap], [rles[i] for i in gap], Tracker(), cuts=np.array([6]))
    assert ids[4] != ids[5]
    tracker = Tracker()
    assign_ids(frames[:5], labels[:5], rles[:5], tracker, cuts=np.array([5]))
    assert tracker.tracks == [] and tracker.next_id == 2


@pytest.mark.parametrize("cut", [10, 7])  # at a range's first frame (frames_per_range 5), and inside one
def test_no_object_id_spans_a_hard_cut(cut, clip, tmp_path):
    from segflow.cli import run_label

    video = clips.write_mp4(tmp_path / "cut.mp4", cut_clip(16, cut))
    run_label([str(video)], str(tmp_path / "o"), model="test-color", frames_per_range=5)
    df = pd.read_parquet(tmp_path / "o")
    assert set(df["frame"]) == set(range(16)) and set(df["class_name"]) == {"circle", "square", "ring"}
    before, after = set(df.loc[df["frame"] < cut, "object_id"]), set(df.loc[df["frame"] >= cut, "object_id"])
    assert not before & after
    # within each shot every object keeps one id
    for shot in (df[df["frame"] < cut], df[df["frame"] >= cut]):
        assert shot.groupby("class_name")["object_id"].nunique().eq(1).all()

    # the clip without a cut keeps its ids from end to end
    run_label([str(clip)], str(tmp_path / "plain"), model="test-color", frames_per_range=5)
    plain = pd.read_parquet(tmp_path / "plain")
    assert plain.groupby("class_name")["object_id"].nunique().eq(1).all()
