"""Stage 4, polygonize: binary masks -> valid shapely (Multi)Polygons in pixel coordinates.

Coordinates follow pixel edges: pixel (row r, col c) is the unit square
[c, c + 1] x [r, r + 1], so a polygon's area equals the mask's pixel count at
coarseness 0 and COCO/Encord consumers rasterize it back onto the same pixels.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np
import shapely
from shapely.geometry import LineString, MultiPolygon, Point, Polygon
from shapely.geometry.base import BaseGeometry

from segflow.contracts import Detections, Polygons

DEFAULT_MIN_AREA = 16.0  # px^2: specks and pinholes smaller than a 4x4 block are noise
# A tolerance that suits a 300 px object turns a 20 px one into a triangle: whatever
# the coarseness, the tolerance is halved until the polygon keeps this IoU with the
# exact outline, so coarseness trims vertices but never loses the object's shape.
MIN_POLYGON_IOU = 0.95
# Below this (pixels) RDP trims nothing a pixel outline would miss: the search gives up
# and keeps the exact outline. A floor in pixels, not a number of halvings, so the
# search from tolerance 2t goes on exactly as the search from t once it gets there.
_MIN_TOLERANCE = 0.05
# Part of every polygon cache key and footer: a change to what polygons come out bumps it.
POLYGONIZER_VERSION = "rdp-iou-2"


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


def _rle_crops(rles: list[dict]) -> list[tuple[np.ndarray, tuple[int, int]]]:
    """`_crop(mask_utils.decode(rle))` of each RLE without expanding any whole frame.

    Every RLE's runs of ones are cut at column ends (the counts run down the columns)
    and placed in its box, all boxes in one buffer (column by column) filled at once
    from the pieces' gaps and lengths: the cost follows the boxes, not the frames, with
    a handful of numpy calls for all the masks.
    """
    from segflow.ops.rle import rles_runs  # numpy decoder of pycocotools' counts strings

    if not rles:
        return []
    runs, start = rles_runs(rles)
    h = np.asarray([int(r["size"][0]) for r in rles], np.int64)
    w = np.asarray([int(r["size"][1]) for r in rles], np.int64)
    which = np.repeat(np.arange(len(rles)), np.diff(start))
    before_run = np.cumsum(runs) - runs
    first = before_run - np.repeat(np.append(before_run, 0)[start[:-1]], np.diff(start))  # run starts in its RLE
    on = ((np.arange(len(runs)) - start[which]) % 2 == 1) & (runs > 0)
    rle, first, length = which[on], first[on], runs[on]
    hr = h[rle]
    col_a, col_b = first // hr, (first + length - 1) // hr
    # one piece per column a run covers
    pieces = col_b - col_a + 1
    k = np.arange(int(pieces.sum())) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    run = np.repeat(np.arange(len(rle)), pieces)
    rle, hr = rle[run], hr[run]
    col = col_a[run] + k
    r0 = np.where(k == 0, first[run] % hr, 0)
    r1 = np.where(col == col_b[run], (first + length - 1)[run] % hr, hr - 1) + 1  # exclusive
    has = np.flatnonzero(np.bincount(rle, minlength=len(rles)))
    at = np.searchsorted(rle, has)  # first piece of each non-empty mask (pieces in RLE order)
    y0 = np.zeros(len(rles), np.int64)
    x0, y1, x1 = y0.copy(), y0 + 1, y0 + 1  # an empty mask: one zero pixel at (0, 0)
    if len(has):
        y0[has] = np.maximum(np.minimum.reduceat(r0, at) - 1, 0)
        y1[has] = np.minimum(np.maximum.reduceat(r1, at) + 1, h[has])
        x0[has] = np.maximum(col[at] - 1, 0)  # columns ascend within a mask
        x1[has] = np.minimum(col[np.append(at[1:], len(col)) - 1] + 2, w[has])
    ch, cw = y1 - y0, x1 - x0
    base = np.cumsum(ch * cw) - ch * cw
    top = base[rle] + (col - x0[rle]) * ch[rle] - y0[rle]
    # The pieces' starts and ends ascend through the buffer: it is their gaps and
    # lengths, as zeros and ones, end to end (a fill, cheaper than a running sum).
    bounds = np.empty(2 * len(top) + 2, np.int64)
    bounds[0], bounds[1:-1:2], bounds[2:-1:2], bounds[-1] = 0, top + r0, top + r1, int((ch * cw).sum())
    buf = np.repeat(np.arange(len(bounds) - 1, dtype=np.uint8) & 1, np.diff(bounds))
    return [(np.ascontiguousarray(buf[base[i]:base[i] + ch[i] * cw[i]].reshape(cw[i], ch[i]).T), (int(x0[i]), int(y0[i])))
            for i in range(len(rles))]


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
    return polygons_of_crops([_crop(mask)], tolerance, min_area, min_iou)[0]


def polygons_of_crops(
    crops: list[tuple[np.ndarray, tuple[int, int]]], tolerance: float, min_area: float,
    min_iou: float = MIN_POLYGON_IOU, frame: tuple[int, int] | None = None,
) -> list[BaseGeometry | None]:
    """`mask_to_polygon` of each mask that a `_crop` (box, offset) cuts out.

    The masks are simplified together, one halving round at a time, so each round's
    offsets and IoU checks are a few vectorized calls for all of them rather than a
    dozen small ones per mask (most of the cost, for objects of a few hundred pixels).
    `frame` (height, width) bounds the pixels the IoU floor is measured on.
    """
    return _polygons_of_crops(crops, tolerance, min_area, min_iou, frame)[0]


def _polygons_of_crops(
    crops: list[tuple[np.ndarray, tuple[int, int]]], tolerance: float, min_area: float,
    min_iou: float = MIN_POLYGON_IOU, frame: tuple[int, int] | None = None, stop_at: np.ndarray | None = None,
) -> tuple[list[BaseGeometry | None], np.ndarray]:
    """`polygons_of_crops`, except that mask i's search stops when its tolerance comes
    down to `stop_at[i]` (where an earlier search started: its result is the answer);
    those masks are flagged in the second value, their polygon left None."""
    found: list[BaseGeometry | None] = [None] * len(crops)
    reached = np.zeros(len(crops), bool)
    if tolerance > 0:
        found, reached = _simplified(crops, tolerance, min_area, min_iou, frame, stop_at)
    # coarseness 0, or no simplification kept the floor: the pixel outline
    return [None if r else _finished(g if g is not None else _trace_crop(*c), min_area)
            for g, c, r in zip(found, crops, reached)], reached


def _finished(geom: BaseGeometry, min_area: float) -> BaseGeometry | None:
    """Valid, polygonal, without specks, rings oriented (exterior counter-clockwise)."""
    if not geom.is_valid:
        geom = _polygonal(shapely.make_valid(geom))
    geom = _drop_specks(geom, min_area)
    if geom.is_empty:
        return None
    return shapely.geometry.polygon.orient(geom) if isinstance(geom, Polygon) else MultiPolygon(
        [shapely.geometry.polygon.orient(p) for p in geom.geoms]
    )


class _Outline(NamedTuple):
    """A mask's traced rings (pixel centres, OpenCV contours) grouped as (outer, holes)."""
    contours: tuple
    groups: list[tuple[int, list[int]]]
    points: int  # ring points in all groups: what RDP starts from
    area: float  # the mask's pixel count


def _outline(crop: np.ndarray, offset: tuple[int, int], min_area: float) -> _Outline | None:
    """The rings RDP simplifies; None when the trace is degenerate (a line or a single
    pixel that is not a speck), which only the exact trace handles."""
    contours, hierarchy = cv2.findContours(crop, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE, offset=offset)
    if not contours:
        return None
    hierarchy = hierarchy[0].tolist()  # plain lists: read entry by entry below
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
                return None
    groups = [(o, [k for k in hs if len(contours[k]) >= 3]) for o, hs in groups if len(contours[o]) >= 3]
    if not groups:
        return None
    points = sum(len(contours[r]) for o, hs in groups for r in (o, *hs))
    return _Outline(contours, groups, points, float(np.count_nonzero(crop)))


def _simplified(
    crops: list[tuple[np.ndarray, tuple[int, int]]], tolerance: float, min_area: float, min_iou: float,
    frame: tuple[int, int] | None, stop_at: np.ndarray | None = None,
) -> tuple[list[BaseGeometry | None], np.ndarray]:
    """Each mask's RDP-simplified outline, its tolerance halved until it keeps `min_iou`
    with the mask's pixels; None where the trace is degenerate or nothing passes. Also
    which masks' tolerance came down to their `stop_at` (see `_polygons_of_crops`).

    OpenCV's `approxPolyDP` simplifies each traced ring (pixel centres); one mitred
    offset of the assembled polygon then moves every boundary half a pixel out of the
    material (onto the pixel edges: exteriors grow, holes shrink) plus what RDP cut
    off convex parts. The IoU floor is checked on pixels, each pixel in when its centre
    is, as COCO tools rasterize it (`pixel_ious`): cheaper than polygon overlays, and it
    is the IoU the polygon's consumers see.
    """
    found: list[BaseGeometry | None] = [None] * len(crops)
    outlines = [_outline(crop, offset, min_area) for crop, offset in crops]
    tol = np.full(len(crops), float(tolerance))
    pending = [i for i, o in enumerate(outlines) if o is not None]
    counts, start = row_prefix([crops[i][0] if outlines[i] is not None else crops[i][0][:0] for i in range(len(crops))])
    reached = np.zeros(len(crops), bool)
    while pending:
        centres, kept = _centre_lines([outlines[i] for i in pending], tol[pending])
        tried = [k for k, c in enumerate(centres) if c is not None]
        idx = np.asarray([pending[k] for k in tried], np.int64)
        geoms = _onto_edges(np.asarray([centres[k] for k in tried] or [], dtype=object),
                            np.asarray([outlines[i].area for i in idx], np.float64), tol[idx])
        ious = np.zeros(len(idx))
        ok = np.flatnonzero(shapely.is_valid(geoms) & ~shapely.is_empty(geoms)) if len(idx) else idx
        if len(ok):
            margins = np.ceil(tol[idx[ok]]).astype(np.int64) + 1
            ious[ok] = pixel_ious(geoms[ok], [crops[i] for i in idx[ok]], margins, frame, (counts, start[idx[ok]]))
        for j in np.flatnonzero(ious >= min_iou):
            found[idx[j]] = geoms[j]
        # nothing left to simplify away, and still no good: the exact trace (None)
        pending = [i for i, n in zip(pending, kept) if found[i] is None and n < outlines[i].points]
        tol[pending] /= 2
        if stop_at is not None:
            reached[[i for i in pending if tol[i] == stop_at[i]]] = True
        pending = [i for i in pending if tol[i] >= _MIN_TOLERANCE and not reached[i]]
    return found, reached


def _centre_lines(outlines: list[_Outline], tolerance: np.ndarray) -> tuple[list[BaseGeometry | None], list[int]]:
    """Each outline's rings RDP-simplified and assembled, still through pixel centres
    (None where an outer ring collapses), and how many ring points each kept.

    The rings are simplified one by one (OpenCV) and assembled all at once (shapely's
    vectorized constructors): the same polygons as `Polygon(shell, holes)` per part.
    """
    coords, ring_of, part_of, owner, kept = [], [], [], [], []
    n_rings = n_parts = 0
    for i, (outline, tol) in enumerate(zip(outlines, tolerance)):
        rings_i, count = [], 0
        for outer, holes in outline.groups:
            shell = cv2.approxPolyDP(outline.contours[outer], tol, True)
            rings = [r for r in (cv2.approxPolyDP(outline.contours[k], tol, True) for k in holes) if len(r) >= 3]
            count += len(shell) + sum(len(r) for r in rings)
            if len(shell) < 3:
                rings_i = None
                break
            rings_i.append((shell, *rings))
        kept.append(count)
        if rings_i is None:
            continue
        for rings in rings_i:
            for r in rings:
                coords.append(r.reshape(-1, 2))
                ring_of.append(np.full(len(r), n_rings))
                part_of.append(n_parts)
                n_rings += 1
            n_parts += 1
            owner.append(i)
    out: list[BaseGeometry | None] = [None] * len(outlines)
    if not coords:
        return out, kept
    # A ring through a one-pixel neck touches itself (not valid as such); the offset
    # onto the pixel edges resolves it, and the IoU check catches anything it gets wrong.
    rings = shapely.linearrings(np.concatenate(coords) + 0.5, indices=np.concatenate(ring_of))
    parts = shapely.polygons(rings, indices=np.asarray(part_of))
    owner = np.asarray(owner)
    first = np.flatnonzero(np.diff(owner, prepend=-1))
    sizes = np.diff(np.append(first, len(owner)))
    for j, size in zip(first, sizes):
        out[owner[j]] = parts[j] if size == 1 else MultiPolygon(list(parts[j:j + size]))
    return out, kept


def _onto_edges(centres: np.ndarray, areas: np.ndarray, tolerance: np.ndarray) -> np.ndarray:
    """Centre-line polygons offset onto the pixel edges, vectorized.

    Half a pixel lands the centre-line outline on the pixel edges; RDP keeps vertices
    on the outline, so convex stretches lose area: the missing area is spread evenly
    (at most `tolerance` more).
    """
    if not len(centres):
        return centres
    length = shapely.length(centres)
    parts = shapely.get_num_geometries(centres)
    edge_area = shapely.area(centres) + 0.5 * length + parts  # area once offset by 0.5 (mitre)
    grow = np.minimum(np.maximum(areas - edge_area, 0.0) / np.maximum(length, 1e-9), tolerance)
    return shapely.buffer(centres, 0.5 + grow, join_style="mitre", mitre_limit=5.0)


def pixel_ious(
    geoms: np.ndarray, crops: list[tuple[np.ndarray, tuple[int, int]]], margins: np.ndarray,
    frame: tuple[int, int] | None = None, prefix: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """IoU of each polygon with its mask (`_crop` box and offset), over pixel centres:
    a pixel is in the polygon when its centre is, as COCO tools rasterize it.

    Only pixels in the mask's box widened by its margin (and inside `frame`, height and
    width, when given) are counted. No image is drawn: each row's crossings with the
    polygon's edges give the runs of pixels inside it, and the mask's per-row running
    counts (`row_prefix`, passed as `prefix` when reused) give how many of those are
    mask pixels, for every polygon in one set of numpy calls.
    """
    n = len(geoms)
    box = np.asarray([(x0, y0, c.shape[1], c.shape[0]) for c, (x0, y0) in crops], np.int64).reshape(n, 4)
    x0, y0, w, h = box.T
    wx0, wy0, wx1, wy1 = x0 - margins, y0 - margins, x0 + w + margins, y0 + h + margins
    if frame is not None:
        wx0, wy0 = np.maximum(wx0, 0), np.maximum(wy0, 0)
        wx1, wy1 = np.minimum(wx1, frame[1]), np.minimum(wy1, frame[0])
    g, row, c0, c1 = _runs_inside(geoms, wx0, wy0, wy1 - wy0, wx1 - wx0)
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
    """Running counts of mask pixels over all masks read row by row, end to end, and
    where each mask starts: pixels (r, c) with c < k of mask i number
    `counts[start[i] + r * width + k] - counts[start[i] + r * width]`."""
    sizes = np.asarray([m.size for m in masks], np.int64)
    flat = np.concatenate([m.ravel() for m in masks]) if masks else np.zeros(0, np.uint8)
    # int32 when it cannot overflow: the running sum over every pixel is much of the
    # batch's cost, and narrower is faster
    counts = np.zeros(len(flat) + 1, np.int32 if len(flat) < 2**31 else np.int64)
    np.cumsum(flat, dtype=counts.dtype, out=counts[1:])
    return counts, np.cumsum(sizes) - sizes


def _runs_inside(geoms: np.ndarray, wx0, wy0, wh, ww) -> tuple[np.ndarray, ...]:
    """The runs of pixels whose centres lie inside geometry i, within window i (x0, y0,
    height, width): (geometry, window row, first column, end column) of each run.

    Even-odd scanlines through the pixel centres over every ring's edges: the same
    pixels as `shapely.contains_xy` at the centres (for a polygon with no edge passing
    exactly through a centre).
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


def vertex_count(geom: BaseGeometry) -> int:
    """Distinct vertices of a (Multi)Polygon: ring coordinates without the closing repeat."""
    polys = getattr(geom, "geoms", [geom])
    return int(sum(len(r.coords) - 1 for p in polys for r in [p.exterior, *p.interiors]))


def polygonize(
    det: Detections, coarseness: float, width: int, height: int, min_area: float = DEFAULT_MIN_AREA,
    known: dict[int, tuple[bytes, int, float] | None] | None = None,
    finer: tuple[float, dict[int, tuple[bytes, int, float] | None]] | None = None,
) -> Polygons:
    """Polygonize every detection; instances left empty by speck removal are omitted.

    `known[i]`, where present, is detection i's result from an earlier run with the same
    mask, coarseness, speck size and frame size: (wkb, vertex count, area), or None if
    it came out empty. It is used as is (the polygon is a pure function of those).
    `finer` is (tolerance, results) of an earlier run like that but whose tolerance in
    pixels was this one's halved one or more times: detection i's search stops there
    and takes `results[i]`, which is where the search from here would lead.
    """
    tol = tolerance_px(coarseness, width, height)
    results = dict(known or {})
    todo = [i for i in range(len(det.rles)) if i not in results]
    below, earlier = finer if finer is not None else (np.nan, {})
    for chunk in _chunks(todo, [det.boxes[i] for i in todo]):
        crops = _rle_crops([det.rles[i] for i in chunk])  # = _crop(mask_utils.decode(rle)) of each
        stop_at = np.asarray([below if i in earlier else np.nan for i in chunk])
        geoms, reached = _polygons_of_crops(crops, tol, min_area, frame=(height, width), stop_at=stop_at)
        for i, geom, took_earlier in zip(chunk, geoms, reached):
            if took_earlier:
                results[i] = earlier[i]
            else:
                results[i] = None if geom is None else (shapely.to_wkb(geom), vertex_count(geom), geom.area)
    index = [i for i in range(len(det.rles)) if results.get(i) is not None]
    wkb, counts, areas = zip(*(results[i] for i in index)) if index else ((), (), ())
    return Polygons(
        index=np.asarray(index, np.int64),
        wkb=list(wkb),
        vertex_count=np.asarray(counts, np.int32),
        area=np.asarray(areas, np.float64),
    )


_CHUNK_PIXELS = 4_000_000  # box pixels polygonized together: bounds the batch's memory


def _chunks(todo: list[int], boxes: list[np.ndarray]) -> list[list[int]]:
    """`todo` cut into runs whose boxes hold about `_CHUNK_PIXELS` pixels in all."""
    chunks, size = [[]], 0
    for i, (x0, y0, x1, y1) in zip(todo, boxes):
        px = max(x1 - x0 + 20, 1) * max(y1 - y0 + 20, 1)  # with room for the IoU margin
        if chunks[-1] and size + px > _CHUNK_PIXELS:
            chunks.append([])
            size = 0
        chunks[-1].append(i)
        size += px
    return [c for c in chunks if c]


# ---- Prefect wrapper ---------------------------------------------------------------


from prefect import task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from segflow.storage.keys import key_of  # noqa: E402
from segflow.storage.table import (  # noqa: E402
    load_detections, load_indices, load_polygon_rows, polygons_meta, save_polygons,
)
from segflow.contracts import FrameRange, StageOutput, VideoInfo  # noqa: E402


def _poly_meta(raw_key: str, coarseness: float, min_area: float, width: int, height: int) -> dict:
    """What a range's polygons are a function of, besides which instances were kept."""
    return {"raw_key": raw_key, "coarseness": coarseness, "min_area": min_area, "width": width, "height": height,
            "version": POLYGONIZER_VERSION}


def _siblings(path, rng: FrameRange) -> list[tuple[object, dict]]:
    """This range's other polygon files, with their footers (files without one skipped)."""
    try:
        siblings = sorted(path.parent.glob(f"{rng.name}_*.pq"))
    except (OSError, NotImplementedError):
        return []
    found = []
    for other in siblings:
        fmeta = polygons_meta(other) if other.name != path.name else None
        if fmeta is not None and "empty_raw_index" in fmeta:
            found.append((other, fmeta))
    return found


def _results_of(files: list) -> dict[int, tuple[bytes, int, float] | None]:
    """Per-instance results (by raw position) of polygon files; unreadable ones skipped."""
    found: dict[int, tuple[bytes, int, float] | None] = {}
    for other, fmeta in files:
        try:
            rows = load_polygon_rows(other)
        except (OSError, KeyError, ValueError):
            continue
        found.update({int(r): None for r in fmeta["empty_raw_index"]})
        found.update(rows)
    return found


def earlier_polygons(siblings: list, meta: dict) -> dict[int, tuple[bytes, int, float] | None]:
    """Per-instance results (by raw position) of this range's earlier polygon files made
    from the same raw output with the same coarseness, speck size and frame size.

    A rerun that changes only the confidence or the IoU threshold keeps mostly the same
    instances; their polygons are reused instead of traced and simplified again. Files
    from before this was recorded, or unreadable ones, are simply not used.
    """
    return _results_of([(f, m) for f, m in siblings if {k: m.get(k) for k in meta} == meta])


def finer_polygons(siblings: list, meta: dict) -> tuple[float, dict] | None:
    """(tolerance, per-instance results) of this range's earlier polygon files like
    `meta` but for a coarseness this one's halved one or more times (the closest), or
    None: a rerun that doubles the coarseness searches only the new, coarser tolerances.
    """
    tol = tolerance_px(meta["coarseness"], meta["width"], meta["height"])
    best, files = 0.0, []
    for other, fmeta in siblings:
        if any(fmeta.get(k) != v for k, v in meta.items() if k != "coarseness"):
            continue
        below = tolerance_px(fmeta.get("coarseness") or 0.0, meta["width"], meta["height"])
        halvings = np.log2(tol / below) if 0 < below < tol else 0.0
        if halvings < 1 or halvings != round(halvings) or below * 2 ** round(halvings) != tol or below < best:
            continue
        best, files = below, ([] if below > best else files) + [(other, fmeta)]
    return (best, _results_of(files)) if files else None


def poly_location(job, video: VideoInfo, rng: FrameRange, kept: StageOutput) -> tuple[str, object]:
    """The cache key and path of a range's polygons."""
    key = key_of("poly", POLYGONIZER_VERSION, kept.key, job.settings.coarseness, job.settings.min_area)
    return key, job.layout.cache("poly", video.video_id, rng, key)


def cached_polygons(job, video: VideoInfo, rng: FrameRange, kept: StageOutput) -> StageOutput | None:
    """The range's polygons when they are cached already, else None."""
    key, path = poly_location(job, video, rng, kept)
    meta = polygons_meta(path) if path.exists() else None
    if meta is None or "empty_raw_index" not in meta:
        return None
    return StageOutput(str(path), key, True, members=_members(kept.key, meta["empty_raw_index"]))


@task(name="polygonize", cache_policy=NO_CACHE)
def polygonize_task(
    job, videos: list[VideoInfo], ranges: list[FrameRange], raw: list[StageOutput], kept: list[StageOutput]
) -> list[StageOutput]:
    """`polygonize_range` over ranges (`videos[i]`'s `ranges[i]`: one task run for all that
    are ready); images of one size go through `polygonize` together (`polygonize_images`)."""
    if len(videos) > 1 and all(v.kind == "image" for v in videos):
        return polygonize_images(job, videos, ranges, raw, kept)
    return [polygonize_range(job, *args) for args in zip(videos, ranges, raw, kept)]


class _Todo(NamedTuple):
    """One range's polygons to make: what `polygonize` takes, and where they go."""
    key: str
    path: object
    kept: StageOutput
    kept_idx: np.ndarray
    det: Detections
    meta: dict
    known: dict
    finer: tuple[float, dict] | None


def polygonize_range(job, video: VideoInfo, rng: FrameRange, raw: StageOutput, kept: StageOutput) -> StageOutput:
    """Polygons for one range's kept instances (cached by coarseness and speck size)."""
    todo = _plan(job, video, rng, raw, kept)
    if isinstance(todo, StageOutput):
        return todo
    s = job.settings
    # Ranges run side by side (POLYGONIZE_IN_FLIGHT in the flow): batched, the work is
    # mostly in shapely, numpy and OpenCV calls that let go of the GIL.
    return _save(todo, polygonize(todo.det, s.coarseness, video.width, video.height, s.min_area, todo.known, todo.finer))


def polygonize_images(job, videos: list[VideoInfo], ranges: list[FrameRange], raw: list[StageOutput],
                      kept: list[StageOutput]) -> list[StageOutput]:
    """`polygonize_range` of each image, one `polygonize` call for the images of one size
    (and the same finer tolerance found): it works on all its masks at once, and one call
    per image took 13 ms of CPU per image against 3.8 ms per frame for a video's ranges
    (the same 256 frames, profiled; bench/RESULTS.md, stop 16)."""
    s = job.settings
    out: list[StageOutput | None] = []
    together: dict[tuple, list[int]] = {}
    plans = [_plan(job, *args) for args in zip(videos, ranges, raw, kept)]
    for i, (video, todo) in enumerate(zip(videos, plans)):
        out.append(todo if isinstance(todo, StageOutput) else None)
        if out[-1] is None:
            together.setdefault((video.width, video.height, todo.finer[0] if todo.finer else None), []).append(i)
    for (width, height, _), ii in together.items():
        offsets = np.cumsum([0] + [len(plans[i].det) for i in ii])
        known = {o + k: v for i, o in zip(ii, offsets) for k, v in plans[i].known.items()}
        finer = None
        if plans[ii[0]].finer is not None:
            finer = plans[ii[0]].finer[0], {o + k: v for i, o in zip(ii, offsets) for k, v in plans[i].finer[1].items()}
        det = Detections.concat([plans[i].det for i in ii])
        polys = polygonize(det, s.coarseness, width, height, s.min_area, known, finer)
        for i, lo, hi in zip(ii, offsets[:-1], offsets[1:]):
            rows = np.flatnonzero((polys.index >= lo) & (polys.index < hi))
            out[i] = _save(plans[i], Polygons(index=polys.index[rows] - lo, wkb=[polys.wkb[r] for r in rows],
                                              vertex_count=polys.vertex_count[rows], area=polys.area[rows]))
    return out


def _plan(job, video: VideoInfo, rng: FrameRange, raw: StageOutput, kept: StageOutput) -> _Todo | StageOutput:
    """The range's cached polygons, or what making them takes (with earlier results to reuse)."""
    s = job.settings
    hit = cached_polygons(job, video, rng, kept)
    if hit is not None:
        return hit
    key, path = poly_location(job, video, rng, kept)
    kept_idx = load_indices(kept.file)
    det = load_detections(raw.file).take(kept_idx)
    meta = _poly_meta(raw.key, s.coarseness, s.min_area, video.width, video.height)
    siblings = _siblings(path, rng)
    known = _by_position(earlier_polygons(siblings, meta), kept_idx)
    finer = finer_polygons(siblings, meta)
    if finer is not None:
        finer = finer[0], _by_position(finer[1], kept_idx)
    return _Todo(key, path, kept, kept_idx, det, meta, known, finer)


def _save(todo: _Todo, polys: Polygons) -> StageOutput:
    """Save a range's polygons by raw position, with which kept instances came out empty."""
    raw_index = todo.kept_idx[polys.index]
    empty = np.setdiff1d(todo.kept_idx, raw_index)
    save_polygons(polys, todo.path, raw_index=raw_index, meta={**todo.meta, "empty_raw_index": empty.tolist()})
    return StageOutput(str(todo.path), todo.key, False, members=_members(todo.kept.key, empty.tolist()))


def _by_position(results: dict, kept_idx: np.ndarray) -> dict:
    """Results keyed by raw position, re-keyed by position among the kept instances."""
    return {i: results[int(r)] for i, r in enumerate(kept_idx) if int(r) in results}


def _members(kept_key: str, empty_raw_index: list[int]) -> str:
    """Which kept instances have a polygon: the kept set less those speck removal emptied.
    Tracking depends on this, not on the polygons' shapes (a coarseness change keeps ids)."""
    return key_of("members", kept_key, [int(i) for i in empty_raw_index])
