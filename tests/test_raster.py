"""The one rasterizer (segflow.ops.raster) and the exact tracer (segflow.ops.polygon):
pixel (r, c) is the square [c, c + 1] x [r, r + 1], in when its centre is inside."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import shapely
from shapely.geometry import MultiPolygon, Polygon

from segflow.ops.polygon import mask_to_polygon
from segflow.ops.raster import rasterize, rasterize_window
from segflow.storage.exports.common import geometry_rle
from segflow.training.data import wkb_mask


def _random_masks(seed: int, count: int) -> list[np.ndarray]:
    """Masks of every kind: blobs with holes, several parts, frame-edge contact, salt noise
    (one-pixel parts, pinholes, pixels touching only at a corner), dense and sparse."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        h, w = (int(v) for v in rng.integers(4, 64, 2))
        yy, xx = np.mgrid[:h, :w]
        kind = rng.integers(3)
        if kind == 0:  # pure noise at some density: the hardest topology
            mask = rng.random((h, w)) < rng.choice([0.05, 0.3, 0.5, 0.7, 0.95])
        else:
            mask = np.zeros((h, w), bool)
            for _ in range(rng.integers(1, 5)):  # parts, some cut by the frame edge
                cy, cx, r = rng.integers(-4, h + 4), rng.integers(-4, w + 4), rng.integers(1, 20)
                mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
            for _ in range(rng.integers(0, 4)):  # holes
                cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(1, 6)
                mask &= ~((yy - cy) ** 2 + (xx - cx) ** 2 < r * r)
            if kind == 2:
                mask ^= rng.random((h, w)) < 0.03
        out.append(mask)
    return out


def test_mask_polygon_mask_round_trip_is_pixel_identical():
    """500 random masks -> polygon (coarseness 0, no speck removal) -> mask: the same pixels,
    the polygon's area is the pixel count, and holes and parts are really there."""
    with_holes = multi_part = 0
    for mask in _random_masks(0, 500):
        geom = mask_to_polygon(mask, tolerance=0.0, min_area=0.0)
        h, w = mask.shape
        if not mask.any():
            assert geom is None
            continue
        assert geom.is_valid
        assert np.array_equal(rasterize(geom, h, w), mask)
        assert geom.area == mask.sum()
        assert np.array_equal(wkb_mask(shapely.to_wkb(geom), h, w), mask)  # training reads the same pixels
        rle = geometry_rle(geom, h, w)  # and the exports
        assert np.array_equal(mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}), mask)
        parts = list(getattr(geom, "geoms", [geom]))
        with_holes += any(len(p.interiors) for p in parts)
        multi_part += len(parts) > 1
    assert with_holes > 100 and multi_part > 100


def test_speck_removal_only_drops_small_parts_and_fills_small_holes():
    mask = np.zeros((30, 40), bool)
    mask[2:20, 2:20] = True  # 324 px
    mask[8:10, 8:10] = False  # a 4 px pinhole: filled
    mask[25, 30] = True  # a 1 px speck: dropped
    geom = mask_to_polygon(mask, tolerance=0.0)  # default min_area 16
    want = mask.copy()
    want[8:10, 8:10] = True
    want[25, 30] = False
    assert np.array_equal(rasterize(geom, 30, 40), want)


def test_a_square_covers_exactly_its_pixels():
    """The bug this rasterizer replaces: cv2.fillPoly drew a 10 x 10 square as 121 pixels."""
    square = Polygon([(3, 4), (13, 4), (13, 14), (3, 14)])
    mask = rasterize(square, 20, 20)
    assert mask.sum() == 100 and mask[4:14, 3:13].all()
    assert wkb_mask(shapely.to_wkb(square), 20, 20).sum() == 100


@pytest.mark.parametrize("seed", range(3))
def test_rasterize_matches_pixel_centre_containment(seed):
    """Arbitrary polygons (rotated, off-grid, with holes, several parts, crossing the frame's
    edge): the pixels whose centres shapely finds inside."""
    rng = np.random.default_rng(seed)
    h, w = 50, 70
    yy, xx = np.mgrid[:h, :w] + 0.5
    for _ in range(60):
        parts = []
        for _ in range(rng.integers(1, 3)):
            cx, cy, r = rng.uniform(-10, w + 10), rng.uniform(-10, h + 10), rng.uniform(1, 25)
            angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(3, 12)))
            radii = r * rng.uniform(0.5, 1.0, len(angles))
            shell = shapely.make_valid(Polygon(np.c_[cx + radii * np.cos(angles), cy + radii * np.sin(angles)]))
            parts.append(shell.difference(shapely.Point(cx, cy).buffer(r * rng.uniform(0, 0.4))))
        geom = shapely.union_all(parts)
        geom = geom if isinstance(geom, (Polygon, MultiPolygon)) else Polygon()
        want = shapely.contains_xy(geom, xx, yy)
        assert np.array_equal(rasterize(geom, h, w), want)
        if rasterize_window(geom, h, w) is None:
            assert not want.any()
