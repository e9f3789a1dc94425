"""segflow's polygonize vs supervision's `mask_to_polygons` + `approximate_polygon` at an
equal vertex budget: milliseconds per instance and IoU to the mask.

    python bench/polygonize.py [--seeds 0 1 2 3] [--frames 30] [--reps 3]

Masks are the exact ground-truth masks of synthetic 480x640 clips
(`segflow.synth.generate`): circles, squares, rings (with a hole) and triangles, moving,
crossing, clipped by the frame and cut by occluders (multi-part). No model is involved.

For each mask: segflow runs at the default coarseness (0.005 -> 3.2 px RDP tolerance,
IoU floor 0.95) the way its polygonize stage does, all masks together
(`polygons_of_crops`: each halving round vectorized over them; the cropping of each mask
is timed too), and its vertices are counted (all rings); supervision then gets the same
budget: `mask_to_polygons` (outer contours), and each of its polygons gets a share of
the budget proportional to its length, reached with `approximate_polygon`'s own
epsilon search (`percentage` = the fraction of points to drop). Both are timed over all
masks, alternating (ABBA) for `--reps` repetitions; the median is reported.

IoU to the mask is measured on pixels, each polygon rasterized the way its library's
consumers do: segflow's pixel-edge polygons by pixel-centre containment (as COCO tools
and the tests do), supervision's pixel-centre polygons with `sv.polygon_to_mask`
(cv2.fillPoly). The last line is JSON.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from common import command_line, emit, machine, median, print_table

SIZE = (480, 640)
COARSENESS = 0.005


def gt_masks(seeds: list[int], frames: int) -> list[tuple[str, np.ndarray]]:
    from segflow.synth import generate

    out = []
    for seed in seeds:
        for frame in generate(seed, frames, SIZE):
            out += [(inst.class_name, inst.mask) for inst in frame.instances]
    return out


def segflow_polygons(masks, tol: float) -> list:
    from segflow.ops.outline import crop_mask
    from segflow.ops.polygon import DEFAULT_MIN_AREA, polygons_of_crops

    return polygons_of_crops([crop_mask(m) for _, m in masks], tol, DEFAULT_MIN_AREA, frame=SIZE)


def budgets_for(parts: list[np.ndarray], budget: int) -> list[int]:
    """Split a vertex budget over polygons in proportion to their lengths (>= 3 each)."""
    lengths = np.array([len(p) for p in parts], float)
    shares = np.maximum(np.floor(budget * lengths / lengths.sum()), 3).astype(int)
    return shares.tolist()


def supervision_polygons(masks, budgets: list[int]) -> list[list[np.ndarray]]:
    import supervision as sv

    result = []
    for (_, m), budget in zip(masks, budgets):
        parts = sv.mask_to_polygons(m)
        if not parts:
            result.append([])
            continue
        approx = []
        for part, share in zip(parts, budgets_for(parts, budget)):
            if share >= len(part):
                approx.append(part)
            else:
                # int(N * (1 - percentage)) == share: supervision's target point count
                approx.append(sv.approximate_polygon(part, percentage=1.0 - (share + 0.5) / len(part)))
        result.append(approx)
    return result


def segflow_raster(geom, shape) -> np.ndarray:
    from segflow.ops.raster import rasterize

    return rasterize(geom, *shape)


def supervision_raster(parts, shape) -> np.ndarray:
    import supervision as sv

    out = np.zeros(shape, bool)
    for p in parts:
        out |= sv.polygon_to_mask(p, (shape[1], shape[0])).astype(bool)
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()

    import supervision as sv

    from segflow.ops.polygon import tolerance_px, vertex_count

    tol = tolerance_px(COARSENESS, SIZE[1], SIZE[0])
    masks = gt_masks(args.seeds, args.frames)
    geoms = segflow_polygons(masks, tol)
    budgets = [vertex_count(g) if g is not None else 3 for g in geoms]
    sv_polys = supervision_polygons(masks, budgets)

    # timing, alternating A B B A ...
    times = {"segflow": [], "supervision": []}
    runs = [("segflow", lambda: segflow_polygons(masks, tol)), ("supervision", lambda: supervision_polygons(masks, budgets))]
    for rep in range(args.reps):
        for name, fn in (runs if rep % 2 == 0 else runs[::-1]):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    ms = {k: 1000 * median(v) / len(masks) for k, v in times.items()}

    # quality
    per_class: dict[str, dict[str, list]] = {}
    for (cls, m), g, parts, budget in zip(masks, geoms, sv_polys, budgets):
        d = per_class.setdefault(cls, {"seg_iou": [], "sv_iou": [], "seg_v": [], "sv_v": []})
        d["seg_iou"].append(iou(segflow_raster(g, m.shape), m))
        d["sv_iou"].append(iou(supervision_raster(parts, m.shape), m))
        d["seg_v"].append(budget if g is not None else 0)
        d["sv_v"].append(sum(len(p) for p in parts))
    allv = {k: [x for d in per_class.values() for x in d[k]] for k in ("seg_iou", "sv_iou", "seg_v", "sv_v")}

    mach = machine()
    print(f"# {mach['date']}  {mach['cpu']}  {mach['cores']} cores, load {mach['load_avg_1m']}  | {command_line()}")
    print(f"# {len(masks)} ground-truth masks from seeds {args.seeds} x {args.frames} frames, 480x640; "
          f"coarseness {COARSENESS} ({tol:.1f} px); supervision {sv.__version__}; {args.reps} reps")
    print(f"# ms/instance: segflow {ms['segflow']:.3f}, supervision {ms['supervision']:.3f} "
          f"(each rep, s: segflow {' '.join(f'{t:.2f}' for t in times['segflow'])}; "
          f"supervision {' '.join(f'{t:.2f}' for t in times['supervision'])})")
    rows = []
    for cls, d in sorted(per_class.items()) + [("all", allv)]:
        rows.append([cls, len(d["seg_iou"]), float(np.mean(d["seg_v"])), float(np.mean(d["sv_v"])),
                     float(np.mean(d["seg_iou"])), float(np.min(d["seg_iou"])),
                     float(np.mean(d["sv_iou"])), float(np.min(d["sv_iou"]))])
    print_table(["class", "masks", "segflow vertices", "supervision vertices", "segflow IoU mean", "segflow IoU min",
                 "supervision IoU mean", "supervision IoU min"], rows)
    emit({
        "bench": "polygonize",
        "masks": len(masks),
        "ms_per_instance": {k: round(v, 4) for k, v in ms.items()},
        "speed_ratio_segflow_vs_supervision": round(ms["supervision"] / ms["segflow"], 3),
        "iou_mean": {"segflow": round(float(np.mean(allv["seg_iou"])), 4), "supervision": round(float(np.mean(allv["sv_iou"])), 4)},
        "iou_min": {"segflow": round(float(np.min(allv["seg_iou"])), 4), "supervision": round(float(np.min(allv["sv_iou"])), 4)},
        "vertices_mean": {"segflow": round(float(np.mean(allv["seg_v"])), 2), "supervision": round(float(np.mean(allv["sv_v"])), 2)},
        "date": mach["date"],
    })


if __name__ == "__main__":
    main()
