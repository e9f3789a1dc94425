"""Binary masks -> valid shapely (Multi)Polygons in pixel coordinates: simplification.

Coordinates follow pixel edges: pixel (row r, col c) is the unit square
[c, c + 1] x [r, r + 1], so a polygon's area equals the mask's pixel count at
coarseness 0 and `segflow.ops.raster` (pixel inside when its centre is) draws it back
onto the same pixels.

Masks travel as crops: `crop_mask` (or `segflow.ops.rle.rle_crops` straight from RLEs)
gives the mask's bounding box plus a one-pixel zero margin as C-ordered uint8 (h, w),
and the box's (x, y) offset in the frame; `segflow.ops.outline` traces a crop's exact
outline, which this module simplifies (RDP, kept within `MIN_POLYGON_IOU` of the mask).

Pure numpy/shapely/OpenCV: no Prefect, no disk, no stage imports.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

from segflow.contracts import Detections, Polygons
from segflow.ops.outline import crop_mask, polygonal, trace_crop
from segflow.ops.raster import cut_to_pixels, pixel_ious, row_prefix
from segflow.ops.rle import rle_crops
from segflow.settings import default_of

DEFAULT_MIN_AREA = default_of("min_area")  # px^2: specks and pinholes smaller than a 4x4 block are noise
# A tolerance that suits a 300 px object turns a 20 px one into a triangle: whatever
# the coarseness, the tolerance is halved until the polygon keeps this IoU with the
# exact outline, so coarseness trims vertices but never loses the object's shape.
MIN_POLYGON_IOU = 0.95
# Below this (pixels) RDP trims nothing a pixel outline would miss: the search gives up
# and keeps the exact outline. A floor in pixels, not a number of halvings, so the
# search from tolerance 2t goes on exactly as the search from t once it gets there.
_MIN_TOLERANCE = 0.05
# Part of every polygon cache key and footer: a change to what polygons come out bumps it.
POLYGONIZER_VERSION = "rdp-iou-4"  # 4: simplified outlines cut to the box of their pixels


def tolerance_px(coarseness: float, width: int, height: int) -> float:
    """The RDP tolerance in pixels: coarseness times the image's longer side."""
    return float(coarseness) * max(width, height)


def _drop_specks(geom: BaseGeometry, min_area: float) -> BaseGeometry:
    polys = [g for g in getattr(geom, "geoms", [geom]) if isinstance(g, Polygon) and g.area >= min_area]
    cleaned = []
    for p in polys:
        holes = [h for h in p.interiors if Polygon(h).area >= min_area]
        cleaned.append(Polygon(p.exterior, holes))
    if not cleaned:
        return Polygon()
    return cleaned[0] if len(cleaned) == 1 else MultiPolygon(cleaned)


def mask_to_polygon(
    mask: np.ndarray, tolerance: float = 0.0, min_area: float = DEFAULT_MIN_AREA, min_iou: float = MIN_POLYGON_IOU
) -> BaseGeometry | None:
    """A binary mask -> a valid Polygon or MultiPolygon, or None when nothing is left.

    Args:
        mask: (H, W) bool or 0/1 mask.
        tolerance: Ramer-Douglas-Peucker tolerance in pixels; 0 keeps the exact pixel
            outline (`trace_crop`), else halved until the polygon keeps `min_iou`.
        min_area: parts and holes smaller than this (px^2) are dropped / filled.
        min_iou: IoU with the mask's pixels a simplified polygon must keep.
    Returns:
        valid Polygon or MultiPolygon (holes as interiors, exteriors counter-clockwise)
        in pixel-edge coordinates, or None.
    """
    return polygons_of_crops([crop_mask(mask)], tolerance, min_area, min_iou)[0]


def polygons_of_crops(
    crops: list[tuple[np.ndarray, tuple[int, int]]], tolerance: float, min_area: float,
    min_iou: float = MIN_POLYGON_IOU, frame: tuple[int, int] | None = None,
) -> list[BaseGeometry | None]:
    """`mask_to_polygon` of each mask that a `crop_mask` (box, offset) cuts out.

    The masks are simplified together, one halving round at a time, so each round's
    offsets and IoU checks are a few vectorized calls for all of them rather than a
    dozen small ones per mask (most of the cost, for objects of a few hundred pixels).
    `frame` (height, width) bounds the pixels the IoU floor is measured on.

    Returns:
        one valid (Multi)Polygon or None per crop, as `mask_to_polygon` gives.
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
    out = [None if r else _finished(g if g is not None else trace_crop(*c), min_area)
           for g, c, r in zip(found, crops, reached)]
    # simplified ones cut where their pixels end (after the specks: one may hold the outermost pixels)
    cut = [i for i, g in enumerate(found) if g is not None and out[i] is not None]
    for i, geom in zip(cut, cut_to_pixels(np.array([out[i] for i in cut], dtype=object), frame)):
        if geom is not out[i]:
            out[i] = _finished(polygonal(geom), min_area)
    return out, reached


def _finished(geom: BaseGeometry, min_area: float) -> BaseGeometry | None:
    """Valid, polygonal, without specks, rings oriented (exterior counter-clockwise)."""
    if not geom.is_valid:
        geom = polygonal(shapely.make_valid(geom))
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

    Args:
        det: N detections (their `rles` and (N, 4) `boxes` are read).
        coarseness: fraction of the frame's longer side (`tolerance_px`).
        width, height: the frame's size.
    Returns:
        Polygons: `index` (K,) positions in `det` with a polygon, `wkb` K WKB blobs,
        `vertex_count` (K,) int32, `area` (K,) float64 (px^2).
    """
    tol = tolerance_px(coarseness, width, height)
    results = dict(known or {})
    todo = [i for i in range(len(det.rles)) if i not in results]
    below, earlier = finer if finer is not None else (np.nan, {})
    for chunk in _chunks(todo, [det.boxes[i] for i in todo]):
        crops = rle_crops([det.rles[i] for i in chunk])  # = crop_mask(mask_utils.decode(rle)) of each
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
