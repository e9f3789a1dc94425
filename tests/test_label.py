"""The label flow end to end: every setting's documented effect, caching and read-back."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import shapely

from segflow.cli import run_label
from tests.color_model import ColorModel

SETTINGS = dict(model="test-color", frames_per_range=5, batch_size=3)


def label(clip, out, **kw) -> tuple[dict, pd.DataFrame]:
    result = run_label([str(clip)], str(out), **{**SETTINGS, **kw})
    return result, pd.read_parquet(out)


def geoms(df: pd.DataFrame) -> list:
    return [shapely.from_wkb(g) for g in df["geometry"]]


def frames_of(clip) -> np.ndarray:
    import decord

    vr = decord.VideoReader(str(clip))
    return vr.get_batch(list(range(len(vr)))).asnumpy()


def source_mask(frame: np.ndarray, label: int) -> np.ndarray:
    import torch

    out = ColorModel()._one(torch.from_numpy(frame).permute(2, 0, 1).float() / 255)
    idx = int(np.flatnonzero(out["labels"].numpy() == label)[0])
    return out["masks"][idx, 0].numpy().astype(bool)


def rasterize(geom, h: int, w: int) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w]
    return shapely.contains_xy(geom, xs + 0.5, ys + 0.5)


@pytest.fixture(scope="module")
def default_run(clip, tmp_path_factory):
    return label(clip, tmp_path_factory.mktemp("out") / "labels")


def test_defaults_give_one_tracked_object_per_shape(default_run):
    result, df = default_run
    assert sorted(df["frame"].unique()) == list(range(12))
    assert df.groupby("class_name")["object_id"].nunique().to_dict() == {"circle": 1, "ring": 1, "square": 1}
    assert df["track_id"].notna().all()
    assert (df["confidence"] >= 0.6).all()
    assert result["inputs"][0]["ranges"] == 3  # 12 frames in ranges of 5: ids cross two boundaries


def test_ring_keeps_its_hole_and_occluded_square_is_multipart(default_run):
    _, df = default_run
    for g in geoms(df[df.class_name == "ring"]):
        assert g.geom_type == "Polygon" and len(g.interiors) == 1
    for g in geoms(df[df.class_name == "square"]):
        assert g.geom_type == "MultiPolygon" and len(g.geoms) == 2
    assert all(g.is_valid for g in geoms(df))


def test_polygons_match_their_masks_at_default_coarseness(default_run, clip):
    _, df = default_run
    frames = frames_of(clip)
    labels = {"circle": 1, "square": 2, "ring": 3}
    for row, g in zip(df.itertuples(), geoms(df)):
        mask = source_mask(frames[row.frame], labels[row.class_name])
        poly = rasterize(g, row.height, row.width)
        iou = (mask & poly).sum() / (mask | poly).sum()
        assert iou >= 0.95, (row.frame, row.class_name, iou)
        assert row.vertex_count == sum(len(r.coords) - 1 for p in getattr(g, "geoms", [g]) for r in [p.exterior, *p.interiors])


def test_detection_range_is_inclusive(clip, tmp_path):
    _, df = label(clip, tmp_path / "o", start_frame=3, end_frame=8)
    assert sorted(df["frame"].unique()) == [3, 4, 5, 6, 7, 8]
    assert np.allclose(df.groupby("frame")["timestamp_s"].first().to_numpy(), np.arange(3, 9) / 10.0)


def test_confidence_threshold(clip, tmp_path):
    _, df = label(clip, tmp_path / "o", confidence=0.8)
    assert (df["confidence"] >= 0.8).all()
    assert set(df["class_name"]) == {"circle", "square"}  # the ring scores 0.75


def max_same_class_iou(df: pd.DataFrame) -> float:
    worst = 0.0
    for _, grp in df.groupby(["frame", "class_name"]):
        gs = geoms(grp)
        for i in range(len(gs)):
            for j in range(i + 1, len(gs)):
                worst = max(worst, gs[i].intersection(gs[j]).area / gs[i].union(gs[j]).area)
    return worst


def test_iou_threshold_deletes_overlapping_same_class_instances(clip, tmp_path):
    # The model emits a shifted duplicate of the circle (score 0.65, IoU ~0.9).
    _, loose = label(clip, tmp_path / "loose", iou_threshold=0.99, end_frame=4)
    assert max_same_class_iou(loose) > 0.5  # the duplicate survives a lenient threshold
    _, strict = label(clip, tmp_path / "strict", iou_threshold=0.3, end_frame=4)
    assert max_same_class_iou(strict) <= 0.3
    assert (strict.class_name == "circle").sum() == 5


def test_vertex_count_falls_as_coarseness_rises(clip, tmp_path):
    means = []
    for c in (0.0, 0.002, 0.005, 0.05):  # exact outlines (rdp-iou-3) left 0.02 at 0.50x of 0.0
        _, df = label(clip, tmp_path / f"c{c}", coarseness=c, end_frame=2)
        means.append(df["vertex_count"].mean())
    assert means == sorted(means, reverse=True) and means[0] > 2 * means[-1], means


def test_no_tracking_gives_every_instance_its_own_id(clip, tmp_path):
    _, df = label(clip, tmp_path / "o", tracking=False)
    assert df["object_id"].is_unique
    assert df["track_id"].isna().all()


def test_image_input(image, tmp_path):
    result = run_label([str(image)], str(tmp_path / "o"), **SETTINGS)
    df = pd.read_parquet(tmp_path / "o")
    assert set(df["frame"]) == {0} and set(df["timestamp_s"]) == {0.0}
    assert result["inputs"][0]["kind"] == "image"


def test_a_stage_failing_mid_video_fails_the_input_and_keeps_what_was_written(clip, tmp_path, monkeypatch):
    """A stage failing on one range (here polygonize, on the last) stops the input with
    that error; the ranges in flight finish, every label file written is whole, and the
    rerun writes only what is missing and matches a clean run."""
    import segflow.tasks.polygonize as poly
    from segflow.errors import InputsFailed

    real = poly.polygonize

    def failing(det, *args, **kwargs):
        if len(det.frame) and det.frame.min() >= 10:
            raise RuntimeError("polygonize broke on purpose")
        return real(det, *args, **kwargs)

    settings = dict(model="test-color", frames_per_range=5)
    monkeypatch.setattr(poly, "polygonize", failing)
    with pytest.raises(InputsFailed, match="polygonize broke on purpose"):
        run_label([str(clip)], str(tmp_path / "out"), **settings)
    written = sorted((tmp_path / "out").glob("*/*.parquet"))
    assert len(written) <= 2 and all(len(pd.read_parquet(p)) > 0 for p in written)
    monkeypatch.setattr(poly, "polygonize", real)
    summary = run_label([str(clip)], str(tmp_path / "out"), **settings)
    assert summary["inputs"][0]["files_written"] == 3 - len(written)
    run_label([str(clip)], str(tmp_path / "clean"), **settings)
    cols = ["frame", "object_id", "confidence", "geometry"]
    got, want = (pd.read_parquet(tmp_path / d)[cols].sort_values(["frame", "object_id"]).reset_index(drop=True)
                 for d in ("out", "clean"))
    pd.testing.assert_frame_equal(got, want)
