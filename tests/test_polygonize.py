"""Polygonize's batched paths give what one mask at a time and brute force give."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from shapely import affinity

from segflow.ops import outline
from segflow.ops import polygon as P
from segflow.ops.raster import pixel_boxes, pixel_ious, rasterize


def _masks(seed: int, n: int, h: int = 60, w: int = 80, noise: float = 0.02) -> list[np.ndarray]:
    """Blobs of every size, some cut by the frame edge, some with holes and specks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    out = []
    for _ in range(n):
        mask = np.zeros((h, w), bool)
        for _ in range(rng.integers(1, 4)):
            cy, cx, r = rng.integers(-4, h + 4), rng.integers(-4, w + 4), rng.integers(1, 20)
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        if rng.random() < 0.3:
            mask &= ~(((yy - rng.integers(h)) ** 2 + (xx - rng.integers(w)) ** 2) < rng.integers(2, 8) ** 2)
        mask ^= rng.random((h, w)) < noise
        out.append(mask)
    return out


@pytest.mark.parametrize("tolerance", [0.0, 1.0, 3.0, 8.0])
def test_masks_polygonized_together_as_one_by_one(tolerance):
    crops = [outline.crop_mask(m) for m in _masks(0, 120)]
    together = P.polygons_of_crops(crops, tolerance, 16.0, frame=(60, 80))
    for crop, geom in zip(crops, together):
        alone = P.polygons_of_crops([crop], tolerance, 16.0, frame=(60, 80))[0]
        assert (geom is None and alone is None) or shapely.to_wkb(geom) == shapely.to_wkb(alone)


def test_simplified_polygons_keep_the_iou_floor():
    """Against the exact outline (speck removal aside, the mask's own pixels)."""
    crops = [outline.crop_mask(m) for m in _masks(1, 80, noise=0.0)]
    exact = P.polygons_of_crops(crops, 0.0, 16.0)
    coarse = P.polygons_of_crops(crops, 6.0, 16.0, frame=(60, 80))
    yy, xx = np.mgrid[:60, :80] + 0.5
    checked = 0
    for ex, geom in zip(exact, coarse):
        assert (ex is None) == (geom is None)
        if geom is None:
            continue
        a, b = shapely.contains_xy(ex, xx, yy), shapely.contains_xy(geom, xx, yy)
        assert (a & b).sum() / (a | b).sum() >= P.MIN_POLYGON_IOU - 0.01  # pinholes go after the check
        assert P.vertex_count(geom) <= P.vertex_count(ex)
        checked += 1
    assert checked > 40


@pytest.mark.parametrize("tolerance", [1.0, 3.0, 6.4])
def test_simplified_polygons_end_where_their_pixels_end(tolerance):
    """No sliver past the pixels a polygon draws: its bounds (the table's box) lie within
    half a pixel of the box of its rasterized pixels, and inside the frame. (Mitred
    corners stuck out up to 3.5 px on bikes.mp4 at 6.4 px, coarseness 0.005 of 1280.)"""
    crops = [outline.crop_mask(m) for m in _masks(4, 150)]  # with specks: one may hold the outermost pixels
    geoms = [g for g in P.polygons_of_crops(crops, tolerance, 16.0, frame=(60, 80)) if g is not None]
    bounds = shapely.bounds(np.asarray(geoms, dtype=object))
    pixels = np.array([_pixel_box(rasterize(g, 60, 80)) for g in geoms])
    assert len(geoms) > 100 and np.abs(bounds - pixels).max() <= 0.5
    assert (bounds[:, :2] >= 0).all() and (bounds[:, 2] <= 80).all() and (bounds[:, 3] <= 60).all()
    assert np.allclose(pixel_boxes(np.asarray(geoms, dtype=object), (60, 80)), pixels)


def _pixel_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return cols[0], rows[0], cols[-1] + 1, rows[-1] + 1


def test_pixel_ious_match_shapely_at_pixel_centres():
    rng = np.random.default_rng(2)
    masks = _masks(2, 60)
    crops, geoms = [], []
    for m in masks:
        crop = outline.crop_mask(m)
        g = outline.trace_crop(*crop)
        if g.is_empty:
            continue
        # a polygon near the mask, with edges at arbitrary angles and positions
        g = affinity.rotate(g, rng.uniform(-20, 20), origin="centroid")
        g = affinity.translate(g, rng.uniform(-2, 2), rng.uniform(-2, 2)).buffer(rng.uniform(0, 1.5))
        crops.append(crop)
        geoms.append(g)
    margins = rng.integers(1, 6, len(geoms))
    got = pixel_ious(np.asarray(geoms, dtype=object), crops, margins, frame=(60, 80))
    for (crop, (x0, y0)), g, m, iou in zip(crops, geoms, margins, got):
        h, w = crop.shape
        wx0, wy0 = max(x0 - m, 0), max(y0 - m, 0)
        wx1, wy1 = min(x0 + w + m, 80), min(y0 + h + m, 60)
        yy, xx = np.mgrid[wy0:wy1, wx0:wx1]
        inside = shapely.contains_xy(g, xx + 0.5, yy + 0.5)
        mask = np.zeros_like(inside)
        mask[y0 - wy0:y0 - wy0 + h, x0 - wx0:x0 - wx0 + w] = crop.astype(bool)
        assert iou == pytest.approx((inside & mask).sum() / max((inside | mask).sum(), 1), abs=1e-12)


def test_empty_and_degenerate_masks():
    blank = np.zeros((10, 10), bool)
    line = blank.copy()
    line[5, 1:9] = True
    dot = blank.copy()
    dot[2, 2] = True
    crops = [outline.crop_mask(blank), outline.crop_mask(line), outline.crop_mask(dot)]
    assert P.polygons_of_crops(crops, 2.0, 16.0) == [None, None, None]  # all smaller than a speck
    kept = P.polygons_of_crops([outline.crop_mask(line)], 2.0, 4.0)[0]
    assert kept is not None and kept.area == 8.0  # a line of pixels keeps its pixel outline
