"""The one rasterizer (segflow.ops.raster.rasterize, numpy scanlines through pixel centres)
against the library ways of drawing the same polygons: milliseconds per polygon and
pixels that differ.

    python bench/raster.py [--seed 3] [--frames 40] [--reps 5]

Polygons are what segflow writes: the ground-truth masks of a synthetic 480x640 clip
(`segflow.synth.generate`) polygonized at coarseness 0 (exact outlines) and at the default
0.005. Methods, each timed over all polygons, repetitions alternated (A B C / C B A), median:
- ops.raster: `rasterize(geom, H, W)`.
- shapely: `shapely.contains_xy` at the pixel centres of the polygon's bounding window
  (the same convention: must give the same pixels).
- pycocotools: `frPyObjects` + `merge` + `decode` of the exterior rings, holes cut out
  (the exports' rasterizer before; its own convention, so pixels may differ).
The last line is JSON.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

SIZE = (480, 640)


def shapely_raster(geom, height: int, width: int) -> np.ndarray:
    import shapely

    mask = np.zeros((height, width), bool)
    x0, y0, x1, y1 = geom.bounds
    c0, r0 = max(int(np.floor(x0)), 0), max(int(np.floor(y0)), 0)
    c1, r1 = min(int(np.ceil(x1)), width), min(int(np.ceil(y1)), height)
    ys, xs = np.mgrid[r0:r1, c0:c1]
    mask[r0:r1, c0:c1] = shapely.contains_xy(geom, xs + 0.5, ys + 0.5)
    return mask


def coco_raster(geom, height: int, width: int) -> np.ndarray:
    import pycocotools.mask as mask_utils

    def rings(rs) -> np.ndarray:
        polys = [np.asarray(r.coords)[:-1].ravel().tolist() for r in rs]
        if not polys:
            return np.zeros((height, width), bool)
        return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, height, width))).astype(bool)

    mask = np.zeros((height, width), bool)
    for part in getattr(geom, "geoms", [geom]):
        inside = rings([part.exterior])
        if part.interiors:
            inside &= ~rings(part.interiors)
        mask |= inside
    return mask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()

    from segflow.ops.polygon import mask_to_polygon, tolerance_px
    from segflow.ops.raster import rasterize
    from segflow.synth import generate

    height, width = SIZE
    masks = [inst.mask for frame in generate(args.seed, args.frames, SIZE) for inst in frame.instances]
    methods = {"ops.raster": rasterize, "shapely.contains_xy": shapely_raster, "pycocotools": coco_raster}
    report = {}
    for coarseness in (0.0, 0.005):
        tol = tolerance_px(coarseness, width, height)
        geoms = [g for g in (mask_to_polygon(m, tol) for m in masks) if g is not None]
        times: dict[str, list[float]] = {name: [] for name in methods}
        order = list(methods)
        for rep in range(args.reps):
            for name in order if rep % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                for g in geoms:
                    methods[name](g, height, width)
                times[name].append((time.perf_counter() - start) / len(geoms) * 1e3)
        reference = [rasterize(g, height, width) for g in geoms]
        row = {}
        for name, draw in methods.items():
            differ = sum(int((draw(g, height, width) != ref).sum()) for g, ref in zip(geoms, reference))
            row[name] = {"ms_per_polygon": round(float(np.median(times[name])), 4), "pixels_differing": differ}
            print(f"coarseness {coarseness}: {name:20s} {row[name]['ms_per_polygon']:.4f} ms/polygon, "
                  f"{differ} px differ from ops.raster ({len(geoms)} polygons)")
        report[str(coarseness)] = row
    print(json.dumps(report))


if __name__ == "__main__":
    main()
