"""Previews: overlays carry each track's color, holes stay clear, the mp4 and sheet are written."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
import shapely

from segflow.cli import main, run_label
from segflow.errors import SegflowError
from segflow.preview import ALPHA, render_overlay, tag_text, track_color, write_preview
from segflow.storage.exports.common import geometry_mask


@pytest.fixture(scope="module")
def frames(clip) -> np.ndarray:
    import decord

    vr = decord.VideoReader(str(clip))
    return vr.get_batch(list(range(len(vr)))).asnumpy()


def _interior(geom, h: int, w: int, px: int = 2) -> np.ndarray:
    """The polygon's pixels at least `px` away from its outline (no outline or tag there)."""
    mask = geometry_mask(geom, h, w).astype(np.uint8)
    return cv2.erode(mask, np.ones((2 * px + 1, 2 * px + 1), np.uint8)).astype(bool)


def _blend(src: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    return np.rint(src.astype(np.float32) * (1 - ALPHA) + np.float32(color) * ALPHA)


def test_track_color_is_stable_and_distinct():
    assert track_color("abc-t00001") == track_color("abc-t00001")
    colors = {track_color(f"abc-t{i:05d}") for i in range(50)}
    assert len(colors) == 50
    assert all(0 <= v <= 255 for c in colors for v in c)


def test_overlay_fills_each_polygon_with_its_track_color(table, frames):
    rows = table[table.frame == 3]
    src = frames[3]
    h, w = src.shape[:2]
    out = render_overlay(src, rows)
    assert out.shape == src.shape and out.dtype == np.uint8
    covered = np.zeros((h, w), bool)
    for row in rows.itertuples():
        geom = shapely.from_wkb(row.geometry)
        inside = _interior(geom, h, w)
        covered |= geometry_mask(geom, h, w)
        diff = np.abs(out[inside].astype(np.int16) - _blend(src[inside], track_color(row.object_id)))
        assert (diff.max(axis=1) <= 1).mean() >= 0.99, row.class_name
        if row.class_name == "ring":  # the hole is not painted
            cx, cy = geom.interiors[0].centroid.coords[0]
            assert (out[int(cy) - 2:int(cy) + 3, int(cx) - 2:int(cx) + 3] == src[int(cy) - 2:int(cy) + 3, int(cx) - 2:int(cx) + 3]).all()
    for row in rows.itertuples():  # each tag's own box (its width follows its text)
        (tw, th), base = cv2.getTextSize(tag_text(row._asdict()), cv2.FONT_HERSHEY_SIMPLEX, max(0.35, min(h, w) / 700), 1)
        x0, y0, x1, y1 = shapely.from_wkb(row.geometry).bounds
        covered[max(int(y0) - th - base - 4, 0):int(y1) + th + base + 4, max(int(x0) - 2, 0):int(x0) + tw + 4] = True
    far = cv2.dilate(covered.astype(np.uint8), np.ones((41, 41), np.uint8)) == 0
    assert (out[far] == src[far]).all()  # nothing drawn away from the objects and their tags


def test_preview_writes_a_playable_mp4_and_a_sheet(labeled, table, frames, tmp_path):
    import decord

    written = write_preview(labeled, tmp_path / "preview", frames=6)
    name = f"shapes-{table.video_id.iloc[0][:8]}"
    assert written == {f"{name} video": tmp_path / "preview" / f"{name}.mp4",
                       f"{name} sheet": tmp_path / "preview" / f"{name}-sheet.png"}
    vr = decord.VideoReader(str(written[f"{name} video"]))
    assert len(vr) == 12 and vr[0].shape == (240, 320, 3)
    video = vr.get_batch(list(range(12))).asnumpy().astype(np.float32)
    for row in table.itertuples():  # h264 is lossy: compare mean colors inside each polygon
        inside = _interior(shapely.from_wkb(row.geometry), 240, 320, px=3)
        expected = _blend(frames[row.frame][inside], track_color(row.object_id)).mean(axis=0)
        assert np.abs(video[row.frame][inside].mean(axis=0) - expected).max() < 8, (row.frame, row.class_name)
    sheet = cv2.imread(str(written[f"{name} sheet"]))
    assert sheet is not None and sheet.shape[1] > 320  # several thumbnails side by side
    assert not list((tmp_path / "preview").glob(".*"))  # no temporary files left


def test_preview_of_an_image_and_bad_arguments(image, labeled, tmp_path):
    out = tmp_path / "img-labels"
    run_label([str(image)], str(out), model="test-color")
    written = write_preview(out, tmp_path / "p")
    assert sorted(written) == sorted([f"{image.stem}-{pd.read_parquet(out).video_id.iloc[0][:8]} image", "images sheet"])
    assert all(p.is_file() for p in written.values())
    with pytest.raises(SegflowError, match="no label table"):
        write_preview(tmp_path / "p", tmp_path / "q")
    with pytest.raises(SegflowError, match="--input"):
        write_preview(labeled, tmp_path / "q", source="nope.mp4")
    assert main(["preview", str(labeled), "--to", str(tmp_path / "q"), "--frames", "0"]) == 2
    assert not (tmp_path / "q").exists()


def test_preview_to_a_folder_that_cannot_be_made(labeled, capsys):
    """Refused before any frame is drawn, as `segflow label --out` is (root passes every
    permission check for /proc: only making a folder there tells)."""
    assert main(["preview", str(labeled), "--to", "/proc/segflow-preview"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["segflow: error: --to /proc/segflow-preview: cannot create the folder: "
                   "/proc does not allow new folders"], err
