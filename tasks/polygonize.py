"""Stage 4, polygonize: the kept instances' masks -> polygons (segflow.ops.polygon), cached
per range by coarseness and speck size, reusing an earlier run's polygons where they apply.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from segflow.contracts import Detections, FrameRange, Polygons, StageOutput, VideoInfo
from segflow.ops.polygon import POLYGONIZER_VERSION, polygonize, tolerance_px
from segflow.storage.keys import key_of
from segflow.storage.table import (
    load_detections, load_indices, load_polygon_rows, polygons_meta, save_polygons,
)


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

