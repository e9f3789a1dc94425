"""The tracker: identities through range boundaries, occlusions, crossings, exits; determinism."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pycocotools.mask as mask_utils
import pytest

from segflow.ops.rle import rle_runs, runs_to_rle, shift_rle, shift_runs
from segflow.ops.tracker import Tracker, TrackerConfig, assign_ids, box_step

H, W = 120, 160


def disk(cx: float, cy: float, r: float = 10.0) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def rle(mask: np.ndarray) -> dict:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


def sequence(objects: dict[int, dict[int, np.ndarray]], label: int = 1):
    """frames, labels, rles (and the true object of each row) from {object: {frame: mask}}."""
    rows = sorted((f, o) for o, frames in objects.items() for f in frames)
    frames = np.array([f for f, _ in rows], np.int64)
    truth = np.array([o for _, o in rows], np.int64)
    masks = [objects[o][f] for f, o in rows]
    keep = [i for i, m in enumerate(masks) if m.sum() >= 20]  # fully hidden: no detection
    return frames[keep], np.full(len(keep), label, np.int64), [rle(masks[i]) for i in keep], truth[keep]


def moving(x0: float, y: float, vx: float, frames, r: float = 10.0) -> dict[int, np.ndarray]:
    return {f: disk(x0 + vx * f, y, r) for f in frames}


def same_partition(ids: np.ndarray, truth: np.ndarray) -> bool:
    """Each true object has exactly one id and no id is shared by two objects."""
    pairs = set(zip(ids.tolist(), truth.tolist()))
    return len(pairs) == len(set(ids.tolist())) == len(set(truth.tolist()))


# ---- RLE helpers ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_rle_runs_and_shift_agree_with_pixels(seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        m = np.zeros((H, W), bool)
        y, x = rng.integers(0, H - 1), rng.integers(0, W - 1)
        m[y : y + rng.integers(1, 60), x : x + rng.integers(1, 80)] = True
        if rng.random() < 0.3:
            m[-1, -1] = True  # ends on a run of ones
        r = rle(m)
        runs = rle_runs(r)
        assert runs.sum() == H * W
        assert runs_to_rle(runs, (H, W))["counts"] == r["counts"]
        ys, xs = np.nonzero(m)
        dx = int(rng.integers(-xs.min(), W - xs.max()))
        dy = int(rng.integers(-ys.min(), H - ys.max()))
        want = np.zeros_like(m)
        want[ys + dy, xs + dx] = True
        shifted = shift_rle(r, dx * H + dy)
        assert (mask_utils.decode(shifted).astype(bool) == want).all()
        assert shifted["counts"] == runs_to_rle(shift_runs(runs, dx * H + dy), (H, W))["counts"]


def test_box_step_ignores_the_covered_edge():
    old = np.array([10.0, 10.0, 50.0, 50.0])
    assert box_step(old, old + 3).tolist() == [3.0, 3.0]  # plain translation
    covered = np.array([12.0, 10.0, 30.0, 50.0])  # right side went behind something
    assert box_step(old, covered).tolist() == [2.0, 0.0]


# ---- identities -------------------------------------------------------------------------


def test_tracking_off_gives_zero_ids():
    frames, labels, rles, _ = sequence({1: moving(20, 60, 3, range(5))})
    assert (assign_ids(frames, labels, rles, None) == 0).all()


def test_track_keeps_its_id_across_a_range_boundary():
    frames, labels, rles, truth = sequence({1: moving(20, 40, 4, range(10)), 2: moving(140, 80, -4, range(10))})
    tracker = Tracker()
    first, second = frames < 5, frames >= 5
    ids = np.zeros(len(frames), np.int64)
    idx = np.flatnonzero(first)
    ids[idx] = assign_ids(frames[idx], labels[idx], [rles[i] for i in idx], tracker)
    idx = np.flatnonzero(second)
    ids[idx] = assign_ids(frames[idx], labels[idx], [rles[i] for i in idx], tracker)
    assert same_partition(ids, truth)
    assert (ids == assign_ids(frames, labels, rles, Tracker())).all()


@pytest.mark.parametrize("gap, same", [(4, True), (8, False)])
def test_occlusion_within_the_buffer_keeps_the_id_longer_starts_a_new_one(gap, same):
    shown = [f for f in range(30) if not 10 <= f < 10 + gap]
    frames, labels, rles, _ = sequence({1: moving(20, 60, 3, shown)})
    ids = assign_ids(frames, labels, rles, Tracker(TrackerConfig(track_buffer=5)))
    assert (len(set(ids.tolist())) == 1) is same


def test_long_occlusion_behind_an_object_keeps_the_id():
    # A small disk passes behind a big static one for about 18 frames (the synthetic
    # videos hide objects up to 20 frames), moving at 2 px/frame.
    big = disk(80, 60, 24)
    small = {f: disk(30 + 2.5 * f, 60, 8) & ~big for f in range(45)}
    frames, labels, rles, truth = sequence({1: small, 2: {f: big for f in range(45)}})
    hidden = set(range(45)) - set(frames[truth == 1].tolist())
    assert len(hidden) >= 10
    ids = assign_ids(frames, labels, rles, Tracker())
    assert same_partition(ids, truth)


def test_two_crossing_objects_keep_their_ids():
    # Same class, opposite directions, A in front of B while they overlap.
    a = moving(20, 60, 5, range(25))
    b = {f: disk(140 - 5 * f, 64) & ~a[f] for f in range(25)}
    frames, labels, rles, truth = sequence({1: a, 2: b})
    ids = assign_ids(frames, labels, rles, Tracker())
    assert same_partition(ids, truth)


def test_reentry_within_the_buffer_keeps_the_id():
    # Leaves through the right edge, turns around outside, comes back near where it left.
    def x(f: int) -> float:
        return 110 + 6 * f if f <= 14 else 110 + 6 * 14 - 6 * (f - 14)

    obj = {f: disk(x(f), 60 + 0.5 * f, 10) for f in range(30)}
    frames, labels, rles, truth = sequence({1: obj})
    assert len(set(range(30)) - set(frames.tolist())) >= 5  # really left the frame
    ids = assign_ids(frames, labels, rles, Tracker())
    assert len(set(ids.tolist())) == 1


@pytest.mark.parametrize("away", [40, 120])
def test_reentry_after_longer_than_the_buffer_keeps_the_id(away):
    # Leaves on the right (out by frame 24), stays out `away` frames (longer than the
    # 30-frame buffer), comes back lower down moving left; meanwhile another object
    # crosses the middle.
    back = 24 + away
    obj = {f: disk(100 + 3 * f, 50, 10) for f in range(24)}
    obj |= {f: disk(165 - 3 * (f - back), 70, 10) for f in range(back, back + 15)}
    other = moving(10, 100, 2, range(30, 70))
    frames, labels, rles, truth = sequence({1: obj, 2: other})
    assert not set(range(23, back)) & set(frames[truth == 1].tolist())  # really out
    ids = assign_ids(frames, labels, rles, Tracker())
    assert same_partition(ids, truth)
    inside = assign_ids(*sequence({1: {f: disk(80, 60, 10) for f in [*range(5), *range(5 + away, 10 + away)]}})[:3],
                        Tracker())
    assert len(set(inside.tolist())) == 2  # lost inside the frame: waits only the track buffer


def test_an_object_out_for_long_comes_back_on_the_other_side_under_its_id():
    # Leaves on the right (out by frame 24), comes back through the left edge 50 frames
    # later, as the frame's only object of its class; a disk of another class comes in
    # on the left meanwhile and gets an id of its own.
    obj = {f: disk(100 + 3 * f, 50, 10) for f in range(24)} | {f: disk(-5 + 3 * (f - 74), 80, 10) for f in range(74, 90)}
    other = moving(-5, 30, 3, range(40, 60))
    frames, labels, rles, truth = sequence({1: obj, 2: other})
    labels = np.where(truth == 1, 1, 2)
    ids = assign_ids(frames, labels, rles, Tracker())
    assert same_partition(ids, truth)


def test_an_object_back_under_another_name_for_a_frame_takes_its_id_back():
    # Hidden on frames 10-14; on frame 15 the model calls it class 2 (a new track: with
    # the default class penalty re-identification stays within a class), from frame 16
    # class 1 again: the lost track takes its detection back from the one-frame track
    # (whose single row the label table leaves out as a short track).
    # It slowed down behind the occluder: back 20 px short of where it was heading.
    obj = moving(20, 60, 4, range(10)) | {f: disk(60 + 2 * (f - 15), 60) for f in range(15, 30)}
    frames, labels, rles, _ = sequence({1: obj})
    labels = np.where(frames == 15, 2, 1)
    ids = assign_ids(frames, labels, rles, Tracker())
    assert len(set(ids[frames != 15].tolist())) == 1 and ids[frames == 15][0] != ids[0]


def test_an_object_born_on_top_of_another_keeps_its_id_as_it_moves_off():
    # Two rings start on top of each other; the smaller one, first seen touching the
    # other (a fragment), moves off at 14 px/frame: a ring's mask moved that far from
    # where it was first seen barely overlaps, so only re-identification can follow it.
    def ring(cx: float, r: float) -> np.ndarray:
        return disk(cx, 60, r) & ~disk(cx, 60, r / 2)

    big = {f: ring(80 + 2 * f, 20) for f in range(8)}
    small = {f: ring(70 - 14 * f, 12) & ~big[f] for f in range(1, 8)}
    frames, labels, rles, truth = sequence({1: big, 2: small})
    ids = assign_ids(frames, labels, rles, Tracker())
    assert same_partition(ids, truth)


def test_a_one_frame_class_flip_keeps_the_id_unless_tracks_are_strict():
    frames, labels, rles, _ = sequence({1: moving(20, 60, 3, range(8))})
    labels = labels.copy()
    labels[frames == 4] = 2  # the model calls the same mask another class once
    assert len(set(assign_ids(frames, labels, rles, Tracker()).tolist())) == 1
    strict = assign_ids(frames, labels, rles, Tracker(TrackerConfig(class_penalty=1.0)))
    assert len(set(strict[frames != 4].tolist())) == 1 and strict[frames == 4][0] not in set(strict[frames != 4])


def test_an_object_of_another_class_never_takes_the_id():
    # A leaves; B (another class) appears half overlapping where A would be.
    a = moving(40, 60, 2, range(6))
    b = {f: disk(40 + 2 * f + 9, 60) for f in range(6, 12)}
    frames, labels, rles, truth = sequence({1: a, 2: b})
    labels = np.where(truth == 1, 1, 2)
    ids = assign_ids(frames, labels, rles, Tracker())
    assert same_partition(ids, truth)


def test_with_a_small_class_penalty_an_object_back_under_another_name_keeps_its_id():
    # The model misses a still object for 10 frames, then calls it another class.
    obj = {f: disk(60, 60, 12) for f in [*range(6), *range(16, 22)]}
    frames, labels, rles, truth = sequence({1: obj})
    labels = np.where(frames < 16, 1, 2)
    loose = assign_ids(frames, labels, rles, Tracker(TrackerConfig(class_penalty=0.05, match_iou=0.99)))
    assert len(set(loose.tolist())) == 1  # re-identified across classes (not by mask overlap)
    strict = assign_ids(frames, labels, rles, Tracker(TrackerConfig(class_penalty=0.3, match_iou=0.99)))
    assert len(set(strict.tolist())) == 2


def test_low_score_detections_keep_a_track_alive_without_rows():
    frames, labels, rles, _ = sequence({1: moving(20, 60, 3, range(12))})
    weak = frames == 6
    config = TrackerConfig(track_buffer=0)  # without the second pass, one missed frame ends it
    hi = np.flatnonzero(~weak)
    without = assign_ids(frames[hi], labels[hi], [rles[i] for i in hi], Tracker(config))
    lo = np.flatnonzero(weak)
    with_low = assign_ids(
        frames[hi], labels[hi], [rles[i] for i in hi], Tracker(config), frames[lo], labels[lo], [rles[i] for i in lo]
    )
    assert len(with_low) == len(hi)  # low-score detections get no rows
    assert len(set(without.tolist())) == 2 and len(set(with_low.tolist())) == 1


def test_a_split_shape_keeps_the_whole_ones_id():
    # A disk moving down through a horizontal occluder bar is detected as two parts
    # (top and bottom) for a while. Its track follows the top part; the bottom part
    # starts a fragment track that ends up the larger part. When the disk is whole
    # again, the identity is the original track's, not the fragment's.
    rows = np.arange(H)[:, None]
    bar = (rows >= 56) & (rows < 62)
    frames_l, masks = [], []
    for f in range(30):
        m = disk(80, 40 + 1.5 * f, 20)
        if 4 <= f <= 20:
            top, bottom = m & (rows < 56), m & (rows >= 62)
            parts = sorted([p for p in (top, bottom) if p.sum() >= 20], key=lambda p: -p.sum())
            frames_l += [f] * len(parts)
            masks += parts
        else:
            frames_l.append(f)
            masks.append(m & ~bar)
    frames = np.array(frames_l, np.int64)
    ids = assign_ids(frames, np.ones(len(frames), np.int64), [rle(m) for m in masks], Tracker())
    before, after = ids[frames < 4], ids[frames > 20]
    assert len(set(before.tolist())) == 1 and set(after.tolist()) == set(before.tolist())


def test_ids_are_deterministic_and_independent_of_how_frames_are_chunked():
    rng = np.random.default_rng(0)
    objects = {
        o: moving(rng.uniform(10, 150), rng.uniform(10, 110), rng.uniform(-4, 4), range(40), rng.uniform(6, 14))
        for o in range(1, 7)
    }
    frames, labels, rles, _ = sequence(objects)
    straight = assign_ids(frames, labels, rles, Tracker())
    assert (assign_ids(frames, labels, rles, Tracker()) == straight).all()
    for cuts in ([7, 19, 33], [1, 2, 3, 39], list(range(0, 40, 5))):
        tracker = Tracker()
        ids = np.zeros(len(frames), np.int64)
        edges = [0, *cuts, 40]
        for lo, hi in zip(edges[:-1], edges[1:]):
            idx = np.flatnonzero((frames >= lo) & (frames < hi))
            ids[idx] = assign_ids(frames[idx], labels[idx], [rles[i] for i in idx], tracker)
        assert (ids == straight).all()


def test_a_tracker_continues_exactly_from_its_saved_state(tmp_path):
    """Each range's ids file carries the tracker's state; a tracker restored from it (as
    the next range's task does, maybe in another process) continues as if never stopped."""
    from segflow.storage.table import load_tracker_state, save_indices

    rng = np.random.default_rng(1)
    objects = {
        o: moving(rng.uniform(10, 150), rng.uniform(10, 110), rng.uniform(-4, 4), range(40), rng.uniform(6, 14))
        for o in range(1, 7)
    }
    frames, labels, rles, _ = sequence(objects)
    config = TrackerConfig(track_buffer=5, velocity_smoothing=0.3)
    straight = assign_ids(frames, labels, rles, Tracker(config))
    ids, state = np.zeros(len(frames), np.int64), None
    for lo, hi in [(0, 9), (9, 10), (10, 27), (27, 40)]:
        tracker = Tracker(config) if state is None else Tracker.from_state(config, state)
        idx = np.flatnonzero((frames >= lo) & (frames < hi))
        ids[idx] = assign_ids(frames[idx], labels[idx], [rles[i] for i in idx], tracker)
        save_indices(ids[idx], tmp_path / f"r{lo}.pq", tracker.state())
        state = load_tracker_state(tmp_path / f"r{lo}.pq")
        assert Tracker.from_state(config, state).state() == tracker.state()
    assert (ids == straight).all() and len(set(straight.tolist())) >= 6
    assert load_tracker_state(save_indices(ids, tmp_path / "plain.pq")) is None


# ---- the label flow -----------------------------------------------------------------------


def test_interrupted_and_resumed_labeling_gives_the_same_object_ids(clip, tmp_path):
    from segflow.cli import run_label

    settings = dict(model="test-color", frames_per_range=5)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run_label([str(clip)], str(straight), **settings)
    run_label([str(clip)], str(resumed), **settings)
    # "Interrupt": lose the tracks of the first two ranges and the labels of the last two.
    video_dirs = [p for p in resumed.iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(video_dirs) == 1
    track_files = sorted((resumed / ".segflow" / "cache" / "track" / video_dirs[0].name).glob("*.pq"))
    label_files = sorted(video_dirs[0].glob("*.parquet"))
    assert len(track_files) == len(label_files) == 3
    for p in track_files[:2] + label_files[1:]:
        p.unlink()
    shutil.rmtree(resumed / ".segflow" / "cache" / "kept", ignore_errors=True)  # redo filter too
    run_label([str(clip)], str(resumed), **settings)

    cols = ["frame", "class_name", "object_id", "track_id"]
    a = pd.read_parquet(straight)[cols].sort_values(["frame", "class_name"]).reset_index(drop=True)
    b = pd.read_parquet(resumed)[cols].sort_values(["frame", "class_name"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    assert a.groupby("class_name")["object_id"].nunique().eq(1).all()


def test_tracker_config_reads_the_label_settings():
    from segflow.settings import make_settings
    from segflow.tasks.track import tracker_config

    config = tracker_config(make_settings(track_buffer=12, match_iou=0.4))
    assert (config.track_buffer, config.match_iou) == (12, 0.4)
    assert config.velocity_smoothing == TrackerConfig().velocity_smoothing  # knobs settings lack keep defaults


def test_short_tracks_are_left_out_unless_cut_where_labeling_starts_or_ends():
    from segflow.ops.tracker import merge_lengths, short_tracks, track_lengths

    # object 1 on frames 0-39; 2: a 2-frame blink mid-video; 3: seen on frames 37-39
    # (it may go on after the labeled frames); 4: 1 frame at the start; 5: frames 36-37.
    ids = np.array([1] * 40 + [2, 2, 3, 3, 3, 4, 5, 5])
    frames = np.array([*range(40), 10, 11, 37, 38, 39, 0, 36, 37])
    whole = track_lengths(ids, frames)
    split = merge_lengths([track_lengths(ids[frames < 20], frames[frames < 20]),
                           track_lengths(ids[frames >= 20], frames[frames >= 20])])
    assert split == whole == {1: (40, 0, 39), 2: (2, 10, 11), 3: (3, 37, 39), 4: (1, 0, 0), 5: (2, 36, 37)}
    assert short_tracks(whole, 4, 0, 39) == {2, 5}
    assert short_tracks(whole, 4, 0, 60) == {2, 3, 5}  # labeled further: 3 ended inside
    assert short_tracks(whole, 1, 0, 39) == set()
    assert short_tracks({6: (1, 0, 0)}, 4, 0, 0) == set()  # a one-frame input keeps its rows
    assert short_tracks({6: (2, 0, 1), 7: (1, 1, 1)}, 4, 0, 2) == {7}  # 3 frames: only the middle one is inside


def test_a_two_frame_blink_is_left_out_of_the_table(clip, tmp_path):
    """A spurious detection on frames 5-6 of 12 (model "test-blink") gets a track of its
    own, which the label table leaves out by default (--min-track-length 4); the
    tracks themselves are not redone when the setting changes."""
    from segflow.cli import run_label

    def blink_rows(df: pd.DataFrame) -> pd.DataFrame:
        return df[(df["x1"] <= 31) & (df["y0"] >= 200)]

    out = tmp_path / "o"
    run_label([str(clip)], str(out), model="test-blink", frames_per_range=5, min_track_length=1)
    every = pd.read_parquet(out)
    assert sorted(blink_rows(every)["frame"]) == [5, 6] and blink_rows(every)["object_id"].nunique() == 1
    tracks = sorted(p.name for p in (out / ".segflow" / "cache" / "track").rglob("*.pq"))
    run_label([str(clip)], str(out), model="test-blink", frames_per_range=5)
    default = pd.read_parquet(out)
    assert blink_rows(default).empty
    assert len(default) == len(every) - 2 and set(default["object_id"]) == set(every["object_id"]) - set(
        blink_rows(every)["object_id"])
    assert sorted(p.name for p in (out / ".segflow" / "cache" / "track").rglob("*.pq")) == tracks
