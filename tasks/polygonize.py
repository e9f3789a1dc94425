"""Stage 4, polygonize: the kept instances' masks -> polygons (segflow.ops.polygon), cached
per range by coarseness and speck size, reusing an earlier run's polygons where they apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from segflow.contracts import Detections, Polygons, StageOutput, StageSpec, Work
from segflow.ops.polygon import POLYGONIZER_VERSION, polygonize, tolerance_px
from segflow.storage.keys import key_of
from segflow.storage.layout import Layout
from segflow.storage.table import (
    LABEL_POLYGONS_KEY, label_polygon_rows, labels_meta, load_detections, load_indices, load_polygon_rows, polygons_meta,
    save_polygons,
)


def _poly_meta(raw_key: str, coarseness: float, min_area: float, width: int, height: int) -> dict:
    """What a range's polygons are a function of, besides which instances were kept."""
    return {"raw_key": raw_key, "coarseness": coarseness, "min_area": min_area, "width": width, "height": height,
            "version": POLYGONIZER_VERSION}


def _siblings(path, label_file=None) -> list[tuple[object, dict]]:
    """This range's (or shard's) other polygon files, with their footers (files without one
    skipped): the files beside `path` named like it but for the key after the last `_`;
    and a shard's label file (`label_file`), which is its polygon cache once written (its
    footer's `LABEL_POLYGONS_KEY`, with each row's raw position: `raw_index`)."""
    try:
        siblings = sorted(path.parent.glob(f"{path.name.rsplit('_', 1)[0]}_*.pq"))
    except (OSError, NotImplementedError):
        siblings = []
    found = []
    for other in siblings:
        fmeta = polygons_meta(other) if other.name != path.name else None
        if fmeta is not None and "empty_raw_index" in fmeta:
            found.append((other, fmeta))
    fmeta = ((labels_meta(label_file) or {}).get(LABEL_POLYGONS_KEY) if label_file is not None else None)
    if fmeta is not None and {"empty_raw_index", "raw_index"} <= fmeta.keys():
        found.append((label_file, fmeta))
    return found


def _results_of(files: list) -> dict[int, tuple[bytes, int, float] | None]:
    """Per-instance results (by raw position) of polygon files; unreadable ones skipped."""
    found: dict[int, tuple[bytes, int, float] | None] = {}
    for other, fmeta in files:
        try:
            rows = label_polygon_rows(other, fmeta["raw_index"]) if "raw_index" in fmeta else load_polygon_rows(other)
        except (OSError, KeyError, ValueError, TypeError):
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


@dataclass(frozen=True)
class PolygonizeConfig:
    """What the polygonize stage needs of a job."""

    coarseness: float  # RDP tolerance as a fraction of the longer image side
    min_area: float  # px^2: polygon parts and holes smaller than this are dropped
    layout: Layout | None = None  # where a shard's label file is (its polygons reused from it), None: not looked at


def polygonize_config(job) -> PolygonizeConfig:
    return PolygonizeConfig(job.settings.coarseness, job.settings.min_area, job.layout)


def poly_key(config: PolygonizeConfig, work: Work) -> str:
    """Cache key of a range's polygons: the kept set, coarseness and speck size."""
    return key_of("poly", POLYGONIZER_VERSION, work.kept.key, config.coarseness, config.min_area)


def cached_polygons(config: PolygonizeConfig, work: Work) -> StageOutput | None:
    """The range's polygons when they are cached already, else None."""
    meta = polygons_meta(work.file) if work.file.exists() else None
    if meta is None or "empty_raw_index" not in meta:
        return None
    return StageOutput(work.path, work.key, True, members=_members(work.kept.key, meta["empty_raw_index"]))


@task(name="polygonize", cache_policy=NO_CACHE)
def polygonize_task(config: PolygonizeConfig, works: list[Work]) -> list[StageOutput]:
    """`polygonize_range` over ranges (one task run for all that are ready); a shard's
    images of one size go through `polygonize` together (`polygonize_shard`)."""
    return [polygonize_shard(config, w) if w.video.kind == "shard" else polygonize_range(config, w) for w in works]


class _Todo(NamedTuple):
    """One range's polygons to make: what `polygonize` takes, and where they go."""
    work: Work
    kept_idx: np.ndarray
    det: Detections
    meta: dict
    known: dict
    finer: tuple[float, dict] | None


def polygonize_range(config: PolygonizeConfig, work: Work) -> StageOutput:
    """Polygons for one range's kept instances, saved to `work.path`."""
    todo = plan_polygons(config, work)
    c, video = config, work.video
    # Ranges run side by side (the stage's tasks_in_flight): batched, the work is mostly
    # in shapely, numpy and OpenCV calls that let go of the GIL.
    return _save(todo, polygonize(todo.det, c.coarseness, video.width, video.height, c.min_area, todo.known, todo.finer))


def polygonize_shard(config: PolygonizeConfig, work: Work) -> StageOutput:
    """Polygons for a shard's kept instances (frame i = member i), one `polygonize` call
    per image size: it works on all its masks at once, where one call per image cost
    several times more CPU per frame (bench/RESULTS.md, stop 16). The shard's earlier
    results are found with a nominal 1 x 1 frame (`plan_polygons`): the tolerances of two
    coarseness values relate by the same factor at every image size."""
    c, todo = config, plan_polygons(config, work)
    sizes = np.asarray([(m.width, m.height) for m in work.video.members], np.int64).reshape(-1, 2)
    of = sizes[todo.det.frame] if len(todo.det) else np.zeros((0, 2), np.int64)
    index, wkb, counts, areas = [], [], [], []
    for width, height in {tuple(map(int, wh)) for wh in of}:
        pos = np.flatnonzero((of[:, 0] == width) & (of[:, 1] == height))
        known = {n: todo.known[p] for n, p in enumerate(pos) if p in todo.known}
        finer = None
        if todo.finer is not None:
            earlier = {n: todo.finer[1][p] for n, p in enumerate(pos) if p in todo.finer[1]}
            finer = todo.finer[0] * max(width, height), earlier
        polys = polygonize(todo.det.take(pos), c.coarseness, width, height, c.min_area, known, finer)
        index.append(pos[polys.index])
        wkb += polys.wkb
        counts.append(polys.vertex_count)
        areas.append(polys.area)
    if not index:
        return _save(todo, Polygons(np.zeros(0, np.int64), [], np.zeros(0, np.int32), np.zeros(0, np.float64)))
    index_all = np.concatenate(index)
    order = np.argsort(index_all, kind="stable")
    return _save(todo, Polygons(index=index_all[order], wkb=[wkb[i] for i in order],
                                vertex_count=np.concatenate(counts)[order], area=np.concatenate(areas)[order]))


def plan_polygons(config: PolygonizeConfig, work: Work) -> _Todo:
    """What making a range's polygons takes, with earlier results to reuse."""
    kept_idx = load_indices(work.kept.file)
    det = load_detections(work.raw.file).take(kept_idx)
    shard = work.video.kind == "shard"  # tolerances found on a nominal 1 x 1 frame (`polygonize_shard`)
    width, height = (1, 1) if shard else (work.video.width, work.video.height)
    meta = _poly_meta(work.raw.key, config.coarseness, config.min_area, width, height)
    label_file = config.layout.label_file(work.video, work.rng) if shard and config.layout is not None else None
    siblings = _siblings(work.file, label_file)
    known = _by_position(earlier_polygons(siblings, meta), kept_idx)
    finer = finer_polygons(siblings, meta)
    if finer is not None:
        finer = finer[0], _by_position(finer[1], kept_idx)
    return _Todo(work, kept_idx, det, meta, known, finer)


def _save(todo: _Todo, polys: Polygons) -> StageOutput:
    """Save a range's polygons by raw position, with which kept instances came out empty."""
    raw_index = todo.kept_idx[polys.index]
    empty = np.setdiff1d(todo.kept_idx, raw_index)
    w = todo.work
    save_polygons(polys, w.file, raw_index=raw_index, meta={**todo.meta, "empty_raw_index": empty.tolist()})
    return StageOutput(w.path, w.key, False, members=_members(w.kept.key, empty.tolist()))


def _by_position(results: dict, kept_idx: np.ndarray) -> dict:
    """Results keyed by raw position, re-keyed by position among the kept instances."""
    return {i: results[int(r)] for i, r in enumerate(kept_idx) if int(r) in results}


def _members(kept_key: str, empty_raw_index: list[int]) -> str:
    """Which kept instances have a polygon: the kept set less those speck removal emptied.
    Tracking depends on this, not on the polygons' shapes (a coarseness change keeps ids)."""
    return key_of("members", kept_key, [int(i) for i in empty_raw_index])


STAGE = StageSpec(
    name="polys", task=polygonize_task, config=polygonize_config, key=poly_key, cached=cached_polygons,
    reads=("raw", "kept"), where=lambda layout, work: layout.stage_file("poly", work.video, work.rng, work.key),
    tasks_in_flight=2, shard_cache_in_labels=True,
)
"""Two task runs side by side (mostly GIL-free calls), up to 4 full ranges' frames each."""
