"""How much of what is wrong in segflow's labels the review queue puts first.

    python bench/review.py --seeds 0 1 2 --frames 60          # one JSON line
    python bench/review.py --agreement --seeds 3 --frames 30  # segflow compare vs segflow evaluate

Synthetic held-out clips (seeds < 100, exact ground truth) are labeled by the bundled
`shapes-demo` through `segflow label`; the ground truth's COCO file is read with
`segflow import`. On every frame the labels are matched one to one to the ground truth
(mask IoU >= 0.5, Hungarian); wrong instances are false positives (no match), class
errors (matched, other class) and id switches (a ground-truth object matched by another
label object than on its previous matched frame: the new one is charged). Objects are
ranked by `review_queue`; the figure is the share of wrong instances held by the top 10%
of objects. Two baselines ranked the same way: lowest mean confidence first, and random
(the expected share is the top 10%'s share of all instances). `compare` (segflow
compare of labels vs the ground truth) is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from pycocotools import mask as mask_utils
from scipy.optimize import linear_sum_assignment

from segflow.compare import compare_tables, rles_of
from segflow.review import review_queue

MATCH_IOU = 0.5


def wrong_instances(labels: pd.DataFrame, truth: pd.DataFrame) -> pd.Series:
    """Per label row: "" (right), "fp", "class" or "id_switch"."""
    kind = pd.Series("", index=labels.index)
    lab_rles, gt_rles = rles_of(labels), rles_of(truth)
    gt_by_frame = truth.groupby(["video_id", "frame"]).indices
    last_match: dict[str, str] = {}  # ground-truth object -> label object on its last matched frame
    for key, li in sorted(labels.groupby(["video_id", "frame"]).indices.items()):
        gi = gt_by_frame.get(key, np.array([], int))
        iou = np.asarray(mask_utils.iou([lab_rles[i] for i in li], [gt_rles[i] for i in gi], [0] * len(gi))) \
            if len(gi) else np.zeros((len(li), 0))
        iou = iou.reshape(len(li), len(gi))
        rows, cols = linear_sum_assignment(-iou) if iou.size else ([], [])
        matched = {r: c for r, c in zip(rows, cols) if iou[r, c] >= MATCH_IOU}
        for r, i in enumerate(li):
            ix = labels.index[i]
            if r not in matched:
                kind[ix] = "fp"
                continue
            g = truth.iloc[gi[matched[r]]]
            gkey = f"{key[0]}/{g.object_id}"
            if labels.at[ix, "class_name"] != g.class_name:
                kind[ix] = "class"
            elif gkey in last_match and last_match[gkey] != labels.at[ix, "object_id"]:
                kind[ix] = "id_switch"
            last_match[gkey] = labels.at[ix, "object_id"]
    return kind


def top_share(order: list[str], wrong_per_object: pd.Series, fraction: float = 0.1) -> float:
    """Share of all wrong instances held by the first `fraction` of `order` (object ids)."""
    k = max(1, math.ceil(fraction * len(order)))
    total = wrong_per_object.sum()
    return float(wrong_per_object.reindex(order[:k], fill_value=0).sum() / total) if total else float("nan")


def run(seeds: list[int], frames: int, workdir: Path, model: str, objects: int | None = None,
        occluders: int | None = None) -> dict:
    from segflow.cli import run_label
    from segflow.storage.exports.common import labeled_inputs
    from segflow.storage.imports import import_labels
    from segflow.synth import write_clip

    labels, truths = [], []
    t0 = time.perf_counter()
    for seed in seeds:
        clip = write_clip(workdir / "clips", seed=seed, n_frames=frames, size=(480, 640), name=f"seed{seed}",
                          n_objects=objects, occluders=occluders)
        out = workdir / f"labels{seed}"
        if not out.exists():
            run_label([str(clip.video)], str(out), model=model, device="cpu")
        gt = workdir / f"truth{seed}"
        if not gt.exists():
            import_labels([str(clip.coco)], "coco", str(gt))
        labels.append(pd.concat([i.rows for i in labeled_inputs(out)], ignore_index=True))
        truths.append(pd.concat([i.rows for i in labeled_inputs(gt)], ignore_index=True))
    lab, gt = pd.concat(labels, ignore_index=True), pd.concat(truths, ignore_index=True)
    kind = wrong_instances(lab, gt)
    queue, _ = review_queue(lab)
    key = lab["video_id"] + "/" + lab["object_id"]
    wrong = (kind != "").groupby(key).sum()
    by_priority = (queue["video_id"] + "/" + queue["object_id"]).tolist()
    by_confidence = lab.groupby(key)["confidence"].mean().sort_values(kind="stable").index.tolist()
    k = max(1, math.ceil(0.1 * len(by_priority)))
    rng = np.random.default_rng(0)
    random_share = float(np.mean([top_share(list(rng.permutation(by_priority)), wrong) for _ in range(200)]))
    return {
        "bench": "review", "model": model, "seeds": seeds, "frames": frames, "scene_objects": objects,
        "occluders": occluders, "objects": len(by_priority),
        "top_objects": k, "instances": len(lab), "wrong": int((kind != "").sum()),
        "fp": int((kind == "fp").sum()), "class_errors": int((kind == "class").sum()),
        "id_switches": int((kind == "id_switch").sum()),
        "top10_share_review_priority": round(top_share(by_priority, wrong), 4),
        "top10_share_low_confidence": round(top_share(by_confidence, wrong), 4),
        "top10_share_random": round(random_share, 4),
        "compare": {k: round(v, 4) for k, v in compare_tables(lab, gt).items() if isinstance(v, float)},
        "seconds": round(time.perf_counter() - t0, 1),
    }


def agreement(seed: int, frames: int, workdir: Path, model: str) -> dict:
    """`segflow compare` of labels made as `segflow evaluate` scores a model (score floor
    0.05, per-class NMS at 0.3, no tracking, the pixel outline) against the imported
    ground truth, beside `segflow evaluate` on the same clip."""
    from segflow.cli import run_label
    from segflow.flows.evaluate import AP_SCORE_FLOOR, evaluate_flow
    from segflow.storage.exports.common import labeled_inputs
    from segflow.storage.imports import import_labels
    from segflow.synth import write_clip

    clip = write_clip(workdir / "agreement", seed=seed, n_frames=frames, size=(480, 640), name=f"seed{seed}")
    out, gt = workdir / f"agreement-labels{seed}", workdir / f"agreement-truth{seed}"
    if not out.exists():
        run_label([str(clip.video)], str(out), model=model, device="cpu", confidence=AP_SCORE_FLOOR,
                  class_agnostic_nms=False, tracking=False, coarseness=0.0)
    if not gt.exists():
        import_labels([str(clip.coco)], "coco", str(gt))
    tables = [pd.concat([i.rows for i in labeled_inputs(d)], ignore_index=True) for d in (out, gt)]
    compared = compare_tables(*tables)
    evaluated = evaluate_flow(model=model, data=str(clip.coco), device="cpu")
    return {"bench": "compare-vs-evaluate", "model": model, "seed": seed, "frames": frames,
            "compare_segm_AP": round(compared["segm_AP"], 4), "evaluate_segm_AP": round(evaluated["segm_AP"], 4),
            "compare_segm_AP50": round(compared["segm_AP50"], 4),
            "evaluate_segm_AP50": round(evaluated["segm_AP50"], 4),
            "abs_diff_AP": round(abs(compared["segm_AP"] - evaluated["segm_AP"]), 4),
            "abs_diff_AP50": round(abs(compared["segm_AP50"] - evaluated["segm_AP50"]), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="synthetic clip seeds (< 100: held out)")
    ap.add_argument("--frames", type=int, default=60, help="frames per clip")
    ap.add_argument("--model", default="shapes-demo")
    ap.add_argument("--objects", type=int, default=None, help="objects per clip (default: the synth default)")
    ap.add_argument("--occluders", type=int, default=None, help="occluders per clip (default: the synth default)")
    ap.add_argument("--workdir", default=None, help="keep clips and labels here (reused when present)")
    ap.add_argument("--agreement", action="store_true",
                    help="instead: segflow compare vs segflow evaluate on the first seed's clip")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.agreement:
            print(json.dumps(agreement(args.seeds[0], args.frames, Path(args.workdir or tmp), args.model)))
            return
        result = run(args.seeds, args.frames, Path(args.workdir or tmp), args.model, args.objects, args.occluders)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
