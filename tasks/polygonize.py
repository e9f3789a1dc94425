"""Stage 4, polygonize: binary masks -> valid shapely (Multi)Polygons in pixel coordinates.

Coordinates follow pixel edges: pixel (row r, col c) is the unit square
[c, c + 1] x [r, r + 1], so a polygon's area equals the mask's pixel count at
coarseness 0 and COCO/Encord consumers rasterize it back onto the same pixels.
"""

from __future__ import annotations

import cv2
import numpy as np
import shapely
from shapely.geometry import LineString, MultiPolygon, Point, Polygon
from shapely.geometry.base import BaseGeometry

from segflow.tasks.contracts import Detections, Polygons

DEFAULT_MIN_AREA = 16.0  # px^2: specks and pinholes smaller than a 4x4 block are noise
# A tolerance that suits a 300 px object turns a 20 px one into a triangle: whatever
# the coarseness, the tolerance is halved until the polygon keeps this IoU with the
# exact outline, so coarseness trims vertices but never loses the object's shape.
MIN_POLYGON_IOU = 0.95
_MAX_HALVINGS = 8


def tolerance_px(coarseness: float, width: int, height: int) -> float:
    """The RDP tolerance in pixels: coarseness times the image's longer side."""
    return float(coarseness) * max(width, height)


def _ring_geometry(points: np.ndarray) -> BaseGeometry:
    """An OpenCV contour (pixel centres) as a shapely geometry in pixel-edge coordinates."""
    pts = points.reshape(-1, 2).astype(np.float64) + 0.5
    if len(pts) >= 3:
        return Polygon(pts)
    if len(pts) == 2:
        return LineString(pts)
    return Point(pts[0])


def _crop(mask: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """The mask's bounding box plus a one-pixel zero margin (clipped to the frame), as
    C-ordered uint8, and the box's (x, y) offset in the frame.

    Tracing the crop with `findContours(offset=...)` gives the same integer contour
    points, in the same order and hierarchy, as tracing the whole frame (raster order
    is kept and the margin is zeros like the pixels around it), at a fraction of the
    cost for an object much smaller than the frame.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    if len(rows) == 0:
        return np.zeros((1, 1), np.uint8), (0, 0)
    cols = np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    y0, y1 = max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 2, h)
    x0, x1 = max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, w)
    return np.ascontiguousarray(mask[y0:y1, x0:x1], dtype=np.uint8), (x0, y0)


def _rle_crop(rle: dict) -> tuple[np.ndarray, tuple[int, int]]:
    """`_crop(mask_utils.decode(rle))` without expanding the whole frame: the RLE's runs
    of ones are turned into pixel positions (column-major) and only the box is filled."""
    from segflow.tasks.track import rle_runs  # numpy decoder of pycocotools' counts string

    h, w = (int(v) for v in rle["size"])
    runs = rle_runs(rle)
    starts = np.cumsum(runs) - runs
    on_starts, on_lens = starts[1::2], runs[1::2]
    area = int(on_lens.sum())
    if area == 0:
        return np.zeros((1, 1), np.uint8), (0, 0)
    before = np.cumsum(on_lens) - on_lens  # ones preceding each run
    flat = np.repeat(on_starts - before, on_lens) + np.arange(area)
    cols, rows = np.divmod(flat, h)
    y0, y1 = max(int(rows.min()) - 1, 0), min(int(rows.max()) + 2, h)
    x0, x1 = max(int(cols[0]) - 1, 0), min(int(cols[-1]) + 2, w)  # column-major: cols ascend
    crop = np.zeros((y1 - y0, x1 - x0), np.uint8)
    crop[rows - y0, cols - x0] = 1
    return crop, (x0, y0)


def _trace(mask: np.ndarray) -> BaseGeometry:
    """Exact pixel outline of a mask: every part and every hole."""
    return _trace_crop(*_crop(mask))


def _trace_crop(crop: np.ndarray, offset: tuple[int, int]) -> BaseGeometry:
    """`_trace` of a `_crop` (C-ordered uint8 box with a zero margin, and its offset)."""
    contours, hierarchy = cv2.findContours(crop, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE, offset=offset)
    if not contours:
        return Polygon()
    hierarchy = hierarchy[0]
    parts = []
    for i, contour in enumerate(contours):
        if hierarchy[i][3] != -1:
            continue  # a hole; handled with its parent
        outer = _ring_geometry(contour)
        holes = []
        child = hierarchy[i][2]
        while child != -1:
            holes.append(_ring_geometry(contours[child]))
            child = hierarchy[child][0]
        # Contours run through boundary pixel centres; growing the outline by half a
        # pixel (mitred) lands it on the pixel edges, and the same half pixel shrinks
        # each hole (traced along the foreground pixels around it) to its true size.
        grown = outer.buffer(0.5, join_style="mitre", cap_style="square")
        for hole in holes:
            if isinstance(hole, Polygon):
                hole = Polygon(hole.exterior)
                grown = grown.difference(hole.buffer(-0.5, join_style="mitre"))
        parts.append(grown)
    return shapely.union_all(parts)


def _drop_specks(geom: BaseGeometry, min_area: float) -> BaseGeometry:
    polys = [g for g in getattr(geom, "geoms", [geom]) if isinstance(g, Polygon) and g.area >= min_area]
    cleaned = []
    for p in polys:
        holes = [h for h in p.interiors if Polygon(h).area >= min_area]
        cleaned.append(Polygon(p.exterior, holes))
    if not cleaned:
        return Polygon()
    return cleaned[0] if len(cleaned) == 1 else MultiPolygon(cleaned)


def _polygonal(geom: BaseGeometry) -> BaseGeometry:
    """Keep only the polygonal parts of a geometry (make_valid may add lines)."""
    if isinstance(geom, (Polygon, MultiPolygon)):
        return geom
    polys = [g for g in getattr(geom, "geoms", []) if isinstance(g, (Polygon, MultiPolygon))]
    return shapely.union_all(polys) if polys else Polygon()


def mask_to_polygon(
    mask: np.ndarray, tolerance: float = 0.0, min_area: float = DEFAULT_MIN_AREA, min_iou: float = MIN_POLYGON_IOU
) -> BaseGeometry | None:
    """A binary mask -> a valid Polygon or MultiPolygon, or None when nothing is left.

    `tolerance` is the Ramer-Douglas-Peucker tolerance in pixels (0 keeps the pixel
    outline); separate parts become a MultiPolygon and holes become interiors.
    """
    return _polygon_from_crop(*_crop(mask), tolerance, min_area, min_iou)


def _polygon_from_crop(
    crop: np.ndarray, offset: tuple[int, int], tolerance: float, min_area: float, min_iou: float = MIN_POLYGON_IOU,
    frame: tuple[int, int] | None = None,
) -> BaseGeometry | None:
    """`mask_to_polygon` of the mask that `crop` at `offset` cuts out (see `_crop`).

    `frame` (height, width) bounds the pixels the IoU floor is measured on.
    """
    geom = None
    if tolerance > 0:
        geom = _simplified(crop, offset, tolerance, min_area, min_iou, frame)
    if geom is None:  # coarseness 0, or no simplification kept the floor: the pixel outline
        geom = _trace_crop(crop, offset)
    if not geom.is_valid:
        geom = _polygonal(shapely.make_valid(geom))
    geom = _drop_specks(geom, min_area)
    if geom.is_empty:
        return None
    return shapely.geometry.polygon.orient(geom) if isinstance(geom, Polygon) else MultiPolygon(
        [shapely.geometry.polygon.orient(p) for p in geom.geoms]
    )


def _simplified(
    crop: np.ndarray, offset: tuple[int, int], tolerance: float, min_area: float, min_iou: float,
    frame: tuple[int, int] | None,
) -> BaseGeometry | None:
    """The RDP-simplified outline, halving the tolerance until it keeps `min_iou` with
    the mask's pixels; None when the traced outline is degenerate or nothing passes.

    OpenCV's `approxPolyDP` simplifies each traced ring (pixel centres); one mitred
    offset of the assembled polygon then moves every boundary half a pixel out of the
    material (onto the pixel edges: exteriors grow, holes shrink) plus what RDP cut
    off convex parts. The IoU floor is checked on pixels, each pixel in when its centre
    is, as COCO tools and `rasterize` do: cheaper than polygon overlays, and it is the
    IoU the polygon's consumers see.
    """
    contours, hierarchy = cv2.findContours(crop, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE, offset=offset)
    if not contours:
        return None
    hierarchy = hierarchy[0]
    groups = []  # (outer, holes) index lists
    for i in range(len(contours)):
        if hierarchy[i][3] == -1:
            holes, child = [], hierarchy[i][2]
            while child != -1:
                holes.append(child)
                child = hierarchy[child][0]
            groups.append((i, holes))
    for ring in (r for outer, holes in groups for r in (outer, *holes)):
        if len(contours[ring]) < 3:  # a line or a pixel: a speck, unless min_area lets it be
            length = int(np.abs(np.ptp(contours[ring].reshape(-1, 2), axis=0)).max()) + 1
            if length >= min_area:
                return None  # the exact trace handles lines and single pixels
    groups = [(o, [k for k in hs if len(contours[k]) >= 3]) for o, hs in groups if len(contours[o]) >= 3]
    if not groups:
        return None
    area = float(np.count_nonzero(crop))
    x0, y0 = offset
    full = sum(len(contours[r]) for o, hs in groups for r in (o, *hs))
    for _ in range(_MAX_HALVINGS):
        geom, kept = _approx_polygon(contours, groups, tolerance, area)
        if geom is not None and _pixel_iou(geom, crop, area, x0, y0, int(np.ceil(tolerance)) + 1, frame) >= min_iou:
            return geom
        if kept == full:
            return None  # nothing left to simplify away, and still no good: the exact trace
        tolerance /= 2
    return None


def _approx_polygon(contours, groups, tolerance: float, area: float) -> tuple[BaseGeometry | None, int]:
    """Each ring RDP-simplified, assembled and offset onto the pixel edges (None if that
    leaves nothing valid), and how many ring points were kept."""
    parts, kept = [], 0
    for outer, holes in groups:
        shell = _approx(contours[outer], tolerance)
        rings = [r for r in (_approx(contours[k], tolerance) for k in holes) if len(r) >= 3]
        kept += len(shell) + sum(len(r) for r in rings)
        if len(shell) < 3:
            return None, kept
        # A ring through a one-pixel neck touches itself (not valid as such); the
        # offset below resolves it, and the IoU check catches anything it gets wrong.
        parts.append(Polygon(shell, rings))
    centre = parts[0] if len(parts) == 1 else MultiPolygon(parts)
    # Half a pixel lands the centre-line outline on the pixel edges; RDP keeps vertices
    # on the outline, so convex stretches lose area: spread the missing area evenly.
    edge_area = centre.area + 0.5 * centre.length + len(parts)  # area once offset by 0.5 (mitre)
    grow = min(max(area - edge_area, 0.0) / max(centre.length, 1e-9), tolerance)
    geom = centre.buffer(0.5 + grow, join_style="mitre", mitre_limit=5.0)
    return (geom if geom.is_valid and not geom.is_empty else None), kept


def _approx(contour: np.ndarray, tolerance: float) -> np.ndarray:
    """A traced ring (pixel centres) simplified by RDP, in pixel-edge coordinates."""
    if tolerance > 0:
        contour = cv2.approxPolyDP(contour, tolerance, True)
    return contour.reshape(-1, 2) + 0.5


def _pixel_iou(geom: BaseGeometry, crop: np.ndarray, area: float, x0: int, y0: int, margin: int,
               frame: tuple[int, int] | None) -> float:
    """IoU between a polygon and the mask `crop` (at x0, y0; `area` pixels), over pixel centres."""
    h, w = crop.shape
    wx0, wy0 = x0 - margin, y0 - margin
    wx1, wy1 = x0 + w + margin, y0 + h + margin
    if frame is not None:
        wx0, wy0 = max(wx0, 0), max(wy0, 0)
        wx1, wy1 = min(wx1, frame[1]), min(wy1, frame[0])
    inside = rasterize(geom, wx0, wy0, wy1 - wy0, wx1 - wx0)
    # The mask lies within the crop, so only that part of the window can intersect it.
    inter = np.count_nonzero(inside[y0 - wy0:y0 - wy0 + h, x0 - wx0:x0 - wx0 + w] & crop.view(bool))
    union = np.count_nonzero(inside) + area - inter
    return float(inter / union) if union else 1.0


def rasterize(geom: BaseGeometry, x0: int, y0: int, height: int, width: int) -> np.ndarray:
    """Bool (height, width) image of the window at (x0, y0): pixels whose centres lie in `geom`.

    Even-odd scanlines through the pixel centres over every ring's edges: the same
    pixels as `shapely.contains_xy` at the centres (for a polygon with no edge passing
    exactly through a centre), for a fraction of the cost.
    """
    rings = [r for p in getattr(geom, "geoms", [geom]) for r in [p.exterior, *p.interiors]]
    xy = [np.asarray(r.coords) for r in rings]
    a = np.concatenate([c[:-1] for c in xy])
    b = np.concatenate([c[1:] for c in xy])
    ys = y0 + np.arange(height) + 0.5
    # Edge e crosses row r when its ends lie on either side of the row's centre line.
    cross = (a[None, :, 1] <= ys[:, None]) != (b[None, :, 1] <= ys[:, None])
    r, e = np.nonzero(cross)
    ae, be = a[e], b[e]
    x = ae[:, 0] + (ys[r] - ae[:, 1]) * (be[:, 0] - ae[:, 0]) / (be[:, 1] - ae[:, 1])
    # Each crossing flips inside/outside for every centre right of it: count the flips
    # starting at each column, then a running parity along the row (int8 wraps, but
    # keeps the parity bit).
    first = np.clip(np.ceil(x - x0 - 0.5), 0, width).astype(np.int64)
    flips = np.bincount(r * (width + 1) + first, minlength=height * (width + 1)).astype(np.int8)
    return (np.cumsum(flips.reshape(height, width + 1)[:, :width], axis=1, dtype=np.int8) & 1).view(bool)


def vertex_count(geom: BaseGeometry) -> int:
    """Distinct vertices of a (Multi)Polygon: ring coordinates without the closing repeat."""
    polys = getattr(geom, "geoms", [geom])
    return int(sum(len(r.coords) - 1 for p in polys for r in [p.exterior, *p.interiors]))


def polygonize(
    det: Detections, coarseness: float, width: int, height: int, min_area: float = DEFAULT_MIN_AREA,
    known: dict[int, tuple[bytes, int, float] | None] | None = None,
) -> Polygons:
    """Polygonize every detection; instances left empty by speck removal are omitted.

    `known[i]`, where present, is detection i's result from an earlier run with the same
    mask, coarseness, speck size and frame size: (wkb, vertex count, area), or None if
    it came out empty. It is used as is (the polygon is a pure function of those).
    """
    tol = tolerance_px(coarseness, width, height)
    known = known or {}
    index, wkb, counts, areas = [], [], [], []
    for i, rle in enumerate(det.rles):
        if i in known:
            if known[i] is not None:
                index.append(i)
                wkb.append(known[i][0]), counts.append(known[i][1]), areas.append(known[i][2])
            continue
        geom = _polygon_from_crop(*_rle_crop(rle), tol, min_area, frame=(height, width))  # = mask_to_polygon(decode(rle))
        if geom is None:
            continue
        index.append(i)
        wkb.append(shapely.to_wkb(geom))
        counts.append(vertex_count(geom))
        areas.append(geom.area)
    return Polygons(
        index=np.asarray(index, np.int64),
        wkb=wkb,
        vertex_count=np.asarray(counts, np.int32),
        area=np.asarray(areas, np.float64),
    )


# ---- Prefect wrapper ---------------------------------------------------------------

from segflow import runners  # noqa: E402
from segflow.storage.fs import as_path  # noqa: E402

from prefect import task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from segflow.storage.keys import key_of  # noqa: E402
from segflow.storage.table import (  # noqa: E402
    load_detections, load_indices, load_polygon_rows, polygons_meta, save_polygons,
)
from segflow.tasks.contracts import FrameRange, StageOutput, VideoInfo  # noqa: E402


def _poly_meta(raw_key: str, coarseness: float, min_area: float, width: int, height: int) -> dict:
    """What a range's polygons are a function of, besides which instances were kept."""
    return {"raw_key": raw_key, "coarseness": coarseness, "min_area": min_area, "width": width, "height": height}


def earlier_polygons(path, rng: FrameRange, meta: dict) -> dict[int, tuple[bytes, int, float] | None]:
    """Per-instance results (by raw position) of this range's earlier polygon files made
    from the same raw output with the same coarseness, speck size and frame size.

    A rerun that changes only the confidence or the IoU threshold keeps mostly the same
    instances; their polygons are reused instead of traced and simplified again. Files
    from before this was recorded, or unreadable ones, are simply not used.
    """
    found: dict[int, tuple[bytes, int, float] | None] = {}
    try:
        siblings = sorted(path.parent.glob(f"{rng.name}_*.pq"))
    except (OSError, NotImplementedError):
        return found
    for other in siblings:
        fmeta = polygons_meta(other) if other.name != path.name else None
        if fmeta is None or {k: fmeta.get(k) for k in meta} != meta:
            continue
        try:
            rows = load_polygon_rows(other)
        except (OSError, KeyError, ValueError):
            continue
        found.update({int(r): None for r in fmeta.get("empty_raw_index", [])})
        found.update(rows)
    return found


@task(name="polygonize", cache_policy=NO_CACHE)
def polygonize_task(job, video: VideoInfo, rng: FrameRange, raw: StageOutput, kept: StageOutput) -> StageOutput:
    """Polygons for one range's kept instances (cached by coarseness and speck size)."""
    s = job.settings
    key = key_of("poly", kept.key, s.coarseness, s.min_area)
    path = job.layout.cache("poly", video.video_id, rng, key)
    if path.exists():
        meta = polygons_meta(path)
        if meta is not None and "empty_raw_index" in meta:
            return StageOutput(str(path), key, True, members=_members(kept.key, meta["empty_raw_index"]))
    kept_idx = load_indices(as_path(kept.path))
    det = load_detections(as_path(raw.path)).take(kept_idx)
    meta = _poly_meta(raw.key, s.coarseness, s.min_area, video.width, video.height)
    earlier = earlier_polygons(path, rng, meta)
    known = {i: earlier[int(r)] for i, r in enumerate(kept_idx) if int(r) in earlier}
    # Polygonizing is Python around many small C calls, so it holds the GIL most of the
    # time: ranges polygonized side by side in threads only take turns, and switching
    # costs more than it overlaps. A coarseness rerun of 256 frames on 2 cores spent
    # 2.3 s in 4 ranges side by side, 2.0 s two at a time, 1.2 s one after another.
    with runners.one_at_a_time("polygonize"):
        polys = polygonize(det, s.coarseness, video.width, video.height, s.min_area, known)
    raw_index = kept_idx[polys.index]
    empty = np.setdiff1d(kept_idx, raw_index)
    save_polygons(polys, path, raw_index=raw_index, meta={**meta, "empty_raw_index": empty.tolist()})
    return StageOutput(str(path), key, False, members=_members(kept.key, empty.tolist()))


def _members(kept_key: str, empty_raw_index: list[int]) -> str:
    """Which kept instances have a polygon: the kept set less those speck removal emptied.
    Tracking depends on this, not on the polygons' shapes (a coarseness change keeps ids)."""
    return key_of("members", kept_key, [int(i) for i in empty_raw_index])
