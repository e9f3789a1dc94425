"""Stage 4, polygonize: binary masks -> valid shapely (Multi)Polygons in pixel coordinates.

Coordinates follow pixel edges: pixel (row r, col c) is the unit square
[c, c + 1] x [r, r + 1], so a polygon's area equals the mask's pixel count at
coarseness 0 and COCO/Encord consumers rasterize it back onto the same pixels.
"""

from __future__ import annotations

import cv2
import numpy as np
import pycocotools.mask as mask_utils
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


def _trace(mask: np.ndarray) -> BaseGeometry:
    """Exact pixel outline of a mask: every part and every hole."""
    contours, hierarchy = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
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


def _simplify_once(exact: BaseGeometry, tolerance: float) -> BaseGeometry:
    simple = exact.simplify(tolerance, preserve_topology=True)
    # RDP never moves a vertex, so convex outlines end up inside the mask; one mitred
    # offset restores the lost area without adding vertices.
    if simple.length > 0:
        grow = (exact.area - simple.area) / simple.length
        if grow > 0:
            simple = simple.buffer(min(grow, tolerance), join_style="mitre", mitre_limit=2.0)
    return simple


def polygon_iou(a: BaseGeometry, b: BaseGeometry) -> float:
    """Area IoU of two polygonal geometries."""
    union = a.union(b).area
    return float(a.intersection(b).area / union) if union > 0 else 1.0


def _simplify(exact: BaseGeometry, tolerance: float, min_iou: float) -> BaseGeometry:
    for _ in range(_MAX_HALVINGS):
        simple = _simplify_once(exact, tolerance)
        if simple.is_valid and polygon_iou(simple, exact) >= min_iou:
            return simple
        tolerance /= 2
    return exact


def mask_to_polygon(
    mask: np.ndarray, tolerance: float = 0.0, min_area: float = DEFAULT_MIN_AREA, min_iou: float = MIN_POLYGON_IOU
) -> BaseGeometry | None:
    """A binary mask -> a valid Polygon or MultiPolygon, or None when nothing is left.

    `tolerance` is the Ramer-Douglas-Peucker tolerance in pixels (0 keeps the pixel
    outline); separate parts become a MultiPolygon and holes become interiors.
    """
    geom = _trace(mask)
    if tolerance > 0 and not geom.is_empty:
        geom = _simplify(geom, tolerance, min_iou)
    if not geom.is_valid:
        geom = _polygonal(shapely.make_valid(geom))
    geom = _drop_specks(geom, min_area)
    if geom.is_empty:
        return None
    return shapely.geometry.polygon.orient(geom) if isinstance(geom, Polygon) else MultiPolygon(
        [shapely.geometry.polygon.orient(p) for p in geom.geoms]
    )


def vertex_count(geom: BaseGeometry) -> int:
    """Distinct vertices of a (Multi)Polygon: ring coordinates without the closing repeat."""
    polys = getattr(geom, "geoms", [geom])
    return int(sum(len(r.coords) - 1 for p in polys for r in [p.exterior, *p.interiors]))


def polygonize(det: Detections, coarseness: float, width: int, height: int, min_area: float = DEFAULT_MIN_AREA) -> Polygons:
    """Polygonize every detection; instances left empty by speck removal are omitted."""
    tol = tolerance_px(coarseness, width, height)
    index, wkb, counts, areas = [], [], [], []
    for i, rle in enumerate(det.rles):
        geom = mask_to_polygon(mask_utils.decode(rle).astype(bool), tol, min_area)
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

from segflow.storage.fs import as_path  # noqa: E402

from prefect import task  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from segflow.storage.keys import key_of  # noqa: E402
from segflow.storage.table import load_detections, load_indices, save_polygons  # noqa: E402
from segflow.tasks.contracts import FrameRange, StageOutput, VideoInfo  # noqa: E402


@task(name="polygonize", cache_policy=NO_CACHE)
def polygonize_task(job, video: VideoInfo, rng: FrameRange, raw: StageOutput, kept: StageOutput) -> StageOutput:
    """Polygons for one range's kept instances (cached by coarseness and speck size)."""
    s = job.settings
    key = key_of("poly", kept.key, s.coarseness, s.min_area)
    path = job.layout.cache("poly", video.video_id, rng, key)
    if path.exists():
        return StageOutput(str(path), key, True)
    det = load_detections(as_path(raw.path)).take(load_indices(as_path(kept.path)))
    save_polygons(polygonize(det, s.coarseness, video.width, video.height, s.min_area), path)
    return StageOutput(str(path), key, False)
