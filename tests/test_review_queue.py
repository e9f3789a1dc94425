"""The review queue ranks planted problems first and says why (pure: tables made here)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shapely
from shapely.geometry import box

from segflow.review import review_queue, review_rows


def _row(frame: int, oid: str, cls: str, score: float, x: float, size: float = 20.0, frame_cls: str | None = None):
    g = box(x, 50, x + size, 50 + size)
    return {"video_id": "v", "frame": frame, "object_id": oid, "track_id": int(oid[1:]), "class_name": cls,
            "frame_class_name": frame_cls or cls, "confidence": score, "x0": x, "y0": 50.0, "x1": x + size,
            "y1": 50.0 + size, "area_px": g.area, "geometry": shapely.to_wkb(g)}


def _table() -> pd.DataFrame:
    rows = []
    for f in range(20):
        rows.append(_row(f, "t1", "circle", 0.95, 10 + f))  # clean
        flips = "ring" if f in (4, 5, 9, 10, 14) else "square"
        rows.append(_row(f, "t2", "square", 0.9, 100 + f, frame_cls=flips))  # class flips
        if f not in (7, 8, 12):
            rows.append(_row(f, "t3", "ring", 0.9, 200 + f))  # broken twice
        rows.append(_row(f, "t4", "circle", 0.62, 300 + f))  # borderline score
        if 10 <= f < 13:
            rows.append(_row(f, "t5", "circle", 0.95, 400))  # a short track, mid-video
        rows.append(_row(f, "t6", "square", 0.95, 500, size=20 if f != 11 else 40))  # one area jump
    return pd.DataFrame(rows)


def test_planted_problems_rank_above_a_clean_object_with_their_reasons():
    objects, frames = review_queue(_table(), confidence=0.6, iou_threshold=0.3)
    by_id = objects.set_index("object_id")
    assert objects.object_id.iloc[-1] == "t1" and by_id.loc["t1", "priority"] < 0.05
    assert all(by_id.loc[o, "priority"] > 0.3 for o in ("t2", "t3", "t4", "t5", "t6"))
    assert "class flips 6x" in by_id.loc["t2", "reasons"]
    assert "track broken 2x" in by_id.loc["t3", "reasons"]
    assert "score 0.62 near threshold" in by_id.loc["t4", "reasons"]
    assert "short track (3 frames)" in by_id.loc["t5", "reasons"]
    assert "area/box jumps" in by_id.loc["t6", "reasons"]
    # Frames where the object count changes are listed with it.
    changed = frames.set_index("frame").loc[7, "reasons"]
    assert "object count 5 -> 4" in changed


def test_row_priorities_are_bounded_float32_and_zero_for_a_clean_row():
    df = _table()
    rows = review_rows(df)
    assert rows["priority"].dtype == np.float32 and rows["priority"].between(0, 1).all()
    clean = df.object_id == "t1"
    assert (rows.loc[clean, "priority"] == 0).all()
    assert (rows.loc[df.frame_class_name != df.class_name, "class"] == 1).all()


def test_a_near_duplicate_that_nms_barely_kept_is_flagged():
    a, b = box(0, 0, 20, 20), box(6, 0, 26, 20)  # IoU 14/26 ~ 0.54: above 0.3, as if per-class NMS kept it
    df = pd.DataFrame([
        {**_row(0, "t1", "circle", 0.9, 0), "geometry": shapely.to_wkb(a)},
        {**_row(0, "t2", "square", 0.7, 6), "geometry": shapely.to_wkb(b)},
        _row(0, "t3", "ring", 0.9, 100),
    ])
    rows = review_rows(df, iou_threshold=0.3)
    # NMS would have deleted the lower-scored one: it is the one to check.
    assert rows["overlap"].tolist()[1:] == [1.0, 0.0] and 0 < rows["overlap"].iloc[0] < 0.5


def test_tracking_off_has_no_track_signals():
    df = _table().assign(track_id=None)
    df["object_id"] = [f"i{k}" for k in range(len(df))]
    rows = review_rows(df)
    assert (rows[["gap", "edge", "short", "jump"]] == 0).all().all()


def _moving_scene(still_score: float = 0.97) -> pd.DataFrame:
    """Four clean objects moving 3 px a frame, and t9: a confident object that never moves
    over all 30 frames (a pattern on the background taken for a square)."""
    rows = []
    for f in range(30):
        for k in range(1, 5):
            rows.append(_row(f, f"t{k}", "circle", 0.97, 100 * k + 3 * f))
        rows.append({**_row(f, "t9", "square", still_score, 600), "y0": 200.0, "y1": 220.0,
                     "geometry": shapely.to_wkb(box(600, 200, 620, 220))})
    return pd.DataFrame(rows)


def test_a_confident_object_at_rest_while_others_move_ranks_first():
    objects, _ = review_queue(_moving_scene(), confidence=0.6, iou_threshold=0.3)
    # Listed last among equals (t9 is the last object seen): only the still signal puts it first.
    assert objects.object_id.iloc[0] == "t9" and objects.priority.iloc[0] > 10
    assert "stays still while others move (30 frames)" in objects.reasons.iloc[0]
    assert (objects.set_index("object_id").loc[["t1", "t2", "t3", "t4"], "priority"] == 0).all()


def test_nothing_is_still_when_no_object_moves():
    df = _moving_scene()
    df = df.assign(x0=df.groupby("object_id").x0.transform("first"), x1=df.groupby("object_id").x1.transform("first"))
    assert (review_rows(df)["still"] == 0).all()  # a parked scene: every object at rest, none stands out


def test_an_instance_inside_a_larger_ones_box_is_flagged_not_the_larger():
    ring, hole, beside = box(0, 0, 60, 60), box(20, 20, 40, 40), box(50, 50, 70, 70)  # hole: the disk in a ring
    df = pd.DataFrame([
        {**_row(0, f"t{k}", cls, 0.95, g.bounds[0], size=g.bounds[2] - g.bounds[0]), "y0": g.bounds[1],
         "y1": g.bounds[3], "area_px": g.area, "geometry": shapely.to_wkb(g)}
        for k, (cls, g) in enumerate((("ring", ring), ("circle", hole), ("square", beside)), start=1)
    ])
    assert review_rows(df)["nested"].tolist() == [0.0, 1.0, 0.0]  # t3: a quarter of its box in t1's
