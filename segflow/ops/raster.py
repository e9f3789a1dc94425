"""THE rasterizer: polygons in pixel-edge coordinates -> pixels, and IoUs measured that way.

Convention (the polygonizer's, COCO's): pixel (row r, col c) is the unit square
[c, c + 1] x [r, r + 1]; a pixel belongs to a polygon when its centre (c + 0.5, r + 0.5)
lies inside it. Scanlines through the pixel centres give, for each row, the runs of
pixels inside: no image is drawn to find them.

Pure numpy/shapely: no Prefect, no disk, no stage imports.
"""

from __future__ import annotations

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry


def rasterize(geom: BaseGeometry | None, height: int, width: int) -> np.ndarray:
    """A (Multi)Polygon in pixel-edge coordinates drawn as a mask: pixel (r, c) is in
    when its centre (c + 0.5, r + 0.5) lies inside the geometry.

    Args:
        geom: valid Polygon or MultiPolygon (holes cut out), or None / empty.
        height, width: the frame's size in pixels.
    Returns:
        (height, width) bool mask.
    """
    mask = np.zeros((height, width), bool)
    window = rasterize_window(geom, height, width)
    if window is not None:
        row0, col0, inside = window
        mask[row0:row0 + inside.shape[0], col0:col0 + inside.shape[1]] = inside
    return mask


def rasterize_window(geom: BaseGeometry | None, height: int, width: int) -> tuple[int, int, np.ndarray] | None:
    """`rasterize` within the geometry's bounding box clipped to the frame (the cost
    follows the object, not the frame).

    Args:
        geom: valid Polygon or MultiPolygon, or None / empty.
        height, width: the frame's size in pixels.
    Returns:
        (row0, col0, mask): mask is (h, w) bool, its pixel (0, 0) the frame's (row0, col0);
        None when the geometry is empty or outside the frame.
    """
    if geom is None or geom.is_empty:
        return None
    x0, y0, x1, y1 = geom.bounds
    col0, row0 = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
    col1, row1 = min(int(np.ceil(x1)), width), min(int(np.ceil(y1)), height)
    if col1 <= col0 or row1 <= row0:
        return None
    rows, cols = row1 - row0, col1 - col0
    _, row, start, end = polygon_runs(np.asarray([geom], dtype=object), np.asarray([col0]), np.asarray([row0]),
                                      np.asarray([rows]), np.asarray([cols]))
    # each run as +1 at its first pixel and -1 after its last, summed along the row
    steps = np.zeros((rows, cols + 1), np.int32)
    np.add.at(steps, (row, start), 1)
    np.add.at(steps, (row, end), -1)
    return row0, col0, np.cumsum(steps[:, :-1], axis=1) > 0


def pixel_boxes(geoms: np.ndarray, frame: tuple[int, int] | None = None) -> np.ndarray:
    """The box of the pixels each geometry draws (as `rasterize` draws them), in pixel-edge
    coordinates: x0, y0 of its first pixel's corner, x1, y1 one past its last pixel.

    Args:
        geoms: (G,) object array of valid Polygons / MultiPolygons.
        frame: (height, width) the pixels are drawn within, or None (unbounded).
    Returns:
        (G, 4) float64 x0, y0, x1, y1; NaN where a geometry draws no pixel.
    """
    n = len(geoms)
    out = np.full((n, 4), np.nan)
    if not n:
        return out
    b = shapely.bounds(geoms)
    ok = ~np.isnan(b).any(axis=1)
    x0 = np.where(ok, np.floor(np.nan_to_num(b[:, 0])), 0).astype(np.int64)
    y0 = np.where(ok, np.floor(np.nan_to_num(b[:, 1])), 0).astype(np.int64)
    x1 = np.where(ok, np.ceil(np.nan_to_num(b[:, 2])), 0).astype(np.int64)
    y1 = np.where(ok, np.ceil(np.nan_to_num(b[:, 3])), 0).astype(np.int64)
    if frame is not None:
        x0, y0 = np.maximum(x0, 0), np.maximum(y0, 0)
        x1, y1 = np.minimum(x1, frame[1]), np.minimum(y1, frame[0])
    wh, ww = np.maximum(y1 - y0, 0), np.maximum(x1 - x0, 0)
    g, row, c0, c1 = polygon_runs(np.asarray(geoms, dtype=object), x0, y0, wh, ww)
    if len(g):
        for col, values, reduce in ((0, x0[g] + c0, np.minimum), (1, y0[g] + row, np.minimum),
                                    (2, x0[g] + c1, np.maximum), (3, y0[g] + row + 1, np.maximum)):
            init = np.inf if reduce is np.minimum else -np.inf
            acc = np.full(n, init)
            reduce.at(acc, g, values.astype(np.float64))
            drew = np.isfinite(acc)
            out[drew, col] = acc[drew]
    return out


def cut_to_pixels(geoms: np.ndarray, frame: tuple[int, int] | None = None, slack: float = 0.5) -> np.ndarray:
    """Each geometry cut where it reaches more than `slack` px past the box of the pixels
    it draws (`pixel_boxes`), or past the frame.

    A simplified outline offset onto the pixel edges with mitred corners sticks out at
    sharp corners and past the frame's edges, into slivers that hold no pixel centre,
    so its bounds (the table's box) would reach pixels past what it draws. Every pixel
    it draws lies inside that box: the cut leaves its pixels as they are and brings its
    bounds within `slack` of the box of its pixels (it holds their centres, so it is
    never more than half a pixel inside). Geometries within the slack are left as they
    are (a cut adds vertices).

    Returns:
        (G,) object array: the geometries, cut where needed (an intersection may hold
        lines or points beside its polygons).
    """
    boxes = pixel_boxes(geoms, frame)
    boxes[:, :2] -= slack
    boxes[:, 2:] += slack
    if frame is not None:
        boxes[:, :2] = np.maximum(boxes[:, :2], 0.0)
        boxes[:, 2] = np.minimum(boxes[:, 2], frame[1])
        boxes[:, 3] = np.minimum(boxes[:, 3], frame[0])
    out = np.array(geoms, dtype=object)
    bounds = shapely.bounds(out) if len(out) else np.zeros((0, 4))
    past = ~np.isnan(boxes).any(axis=1) & ((bounds[:, :2] < boxes[:, :2]).any(axis=1) | (bounds[:, 2:] > boxes[:, 2:]).any(axis=1))
    if past.any():
        out[past] = shapely.intersection(out[past], shapely.box(*boxes[past].T))
    return out


def pixel_ious(
    geoms: np.ndarray, crops: list[tuple[np.ndarray, tuple[int, int]]], margins: np.ndarray,
    frame: tuple[int, int] | None = None, prefix: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """IoU of each polygon with its mask, over pixels drawn as `rasterize` draws them.

    Only pixels in the mask's box widened by its margin (and inside `frame`, height and
    width, when given) are counted. No image is drawn: each row's crossings with the
    polygon's edges give the runs of pixels inside it, and the mask's per-row running
    counts (`row_prefix`, passed as `prefix` when reused) give how many of those are
    mask pixels, for every polygon in one set of numpy calls.

    Args:
        geoms: (G,) object array of valid Polygons / MultiPolygons.
        crops: G (crop, (x0, y0)) masks as `segflow.ops.outline.crop_mask` gives them.
        margins: (G,) int pixels around each crop's box that are counted too.
        frame: (height, width) bounding the counted pixels, or None.
        prefix: `row_prefix` of the crops, when the caller has it already.
    Returns:
        (G,) float64 IoUs (1.0 where both are empty).
    """
    n = len(geoms)
    box = np.asarray([(x0, y0, c.shape[1], c.shape[0]) for c, (x0, y0) in crops], np.int64).reshape(n, 4)
    x0, y0, w, h = box.T
    wx0, wy0, wx1, wy1 = x0 - margins, y0 - margins, x0 + w + margins, y0 + h + margins
    if frame is not None:
        wx0, wy0 = np.maximum(wx0, 0), np.maximum(wy0, 0)
        wx1, wy1 = np.minimum(wx1, frame[1]), np.minimum(wy1, frame[0])
    g, row, c0, c1 = polygon_runs(geoms, wx0, wy0, wy1 - wy0, wx1 - wx0)
    drawn = np.bincount(g, weights=c1 - c0, minlength=n)
    counts, start = prefix if prefix is not None else row_prefix([c for c, _ in crops])
    # the runs in mask coordinates: rows outside the mask's box hold none of its pixels
    r = row + wy0[g] - y0[g]
    on = (r >= 0) & (r < h[g])
    g, r, shift = g[on], r[on], (wx0 - x0)[g[on]]
    k0 = np.clip(c0[on] + shift, 0, w[g])
    k1 = np.clip(c1[on] + shift, 0, w[g])
    at = start[g] + r * w[g]
    inter = np.bincount(g, weights=counts[at + k1] - counts[at + k0], minlength=n)
    area = counts[start + h * w] - counts[start]
    union = drawn + area - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def row_prefix(masks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Running counts of mask pixels over all masks read row by row, end to end.

    Args:
        masks: M (h_i, w_i) 0/1 arrays.
    Returns:
        counts: (sum h_i * w_i + 1,) int32 (int64 when needed) running counts.
        start: (M,) int64 where each mask starts: pixels (r, c) with c < k of mask i
        number ``counts[start[i] + r * w_i + k] - counts[start[i] + r * w_i]``.
    """
    sizes = np.asarray([m.size for m in masks], np.int64)
    flat = np.concatenate([m.ravel() for m in masks]) if masks else np.zeros(0, np.uint8)
    # int32 when it cannot overflow: the running sum over every pixel is much of the
    # batch's cost, and narrower is faster
    counts = np.zeros(len(flat) + 1, np.int32 if len(flat) < 2**31 else np.int64)
    np.cumsum(flat, dtype=counts.dtype, out=counts[1:])
    return counts, np.cumsum(sizes) - sizes


def polygon_runs(geoms: np.ndarray, wx0: np.ndarray, wy0: np.ndarray, wh: np.ndarray,
                 ww: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The runs of pixels whose centres lie inside each geometry, within its window.

    Even-odd scanlines through the pixel centres over every ring's edges: the same
    pixels as `shapely.contains_xy` at the centres (for a polygon with no edge passing
    exactly through a centre, which pixel-edge outlines never have).

    Args:
        geoms: (G,) object array of valid Polygons / MultiPolygons.
        wx0, wy0, wh, ww: (G,) int64 windows: left column, top row, height, width.
    Returns:
        (geometry, row, start, end), each (R,) int64: geometry index, row within its
        window, first column and end column (exclusive) within the window of each run.
    """
    parts, part_of = shapely.get_parts(geoms, return_index=True)
    rings, ring_of = shapely.get_rings(parts, return_index=True)
    xy, point_of = shapely.get_coordinates(rings, return_index=True)
    edge = np.flatnonzero(point_of[:-1] == point_of[1:])  # consecutive points of one ring
    a, b = xy[edge], xy[edge + 1]
    g = part_of[ring_of[point_of[edge]]]
    # Edge e crosses row r (centre line y = y0 + r + 0.5) when its ends lie on either
    # side of it, an end exactly on the line counting as below: lo <= y < hi.
    lo, hi = np.minimum(a[:, 1], b[:, 1]), np.maximum(a[:, 1], b[:, 1])
    r_lo = np.clip(_first_row_at_or_above(lo, wy0[g]), 0, wh[g])
    r_hi = np.clip(_first_row_at_or_above(hi, wy0[g]), 0, wh[g])
    count = np.maximum(r_hi - r_lo, 0)
    e = np.repeat(np.arange(len(edge)), count)
    r = r_lo[e] + np.arange(len(e)) - np.repeat(np.cumsum(count) - count, count)
    ae, be, ge = a[e], b[e], g[e]
    ys = (wy0[ge] + r) + 0.5
    x = ae[:, 0] + (ys - ae[:, 1]) * (be[:, 0] - ae[:, 0]) / (be[:, 1] - ae[:, 1])
    # A crossing at x flips inside/outside for every centre right of it, from column
    # `first` on. A row's crossings are even in number (closed rings): sorted by
    # (geometry, row, column) they pair up into the runs inside.
    first = np.clip(np.ceil(x - wx0[ge] - 0.5), 0, ww[ge]).astype(np.int64)
    stride = int(ww.max(initial=0)) + 1
    rows_before = np.concatenate([[0], np.cumsum(wh)[:-1]]).astype(np.int64)
    key = np.sort((rows_before[ge] + r) * stride + first).reshape(-1, 2)
    row_all, c0 = np.divmod(key[:, 0], stride)
    c1 = key[:, 1] - row_all * stride
    gi = np.searchsorted(rows_before, row_all, side="right") - 1
    keep = c1 > c0
    return gi[keep], (row_all - rows_before[gi])[keep], c0[keep], c1[keep]


def _first_row_at_or_above(y: np.ndarray, y0: np.ndarray) -> np.ndarray:
    """The first row r whose centre line y0 + r + 0.5 is >= y (exact comparison; the
    rounding of `y - y0 - 0.5` can only put the estimate one row off)."""
    r = np.ceil(y - y0 - 0.5).astype(np.int64)
    r -= (y0 + r - 1) + 0.5 >= y
    r += (y0 + r) + 0.5 < y
    return r
