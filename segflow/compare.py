"""One label table against another: mask AP/AP50 (pycocotools COCOeval, segm) and IDF1.

    compare_tables(labels_df, reference_df, frames) -> {"segm_AP": ..., "segm_AP50": ..., "IDF1": ...}

The reference is the ground truth, the labels are detections scored by `confidence`.
Frames are matched by (video_id, frame) and classes by `class_name`; every frame either
side lists is an image of the evaluation (so false positives on frames without any
reference instance count). Geometries are rasterized by pycocotools (pixel (r, c) is
[c, c+1] x [r, r+1]). IDF1 (Ristani et al. 2016): the one-to-one mapping of reference
objects to label objects that maximizes the frames where the pair overlaps with mask
IoU >= 0.5 (IDTP), then IDF1 = 2 IDTP / (reference instances + label instances).
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from scipy.optimize import linear_sum_assignment

from segflow.storage.exports.common import from_wkb, geometry_rle

IDF1_IOU = 0.5


def align_videos(labels: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """`reference` with the video_id of the labels' input of the same file name, for its
    inputs whose video_id the labels lack (an import made where the video was not: its
    id is then a digest of the name, not of the content)."""
    known = set(labels["video_id"])
    by_name = {Path(str(s)).name: v for s, v in zip(labels["source"], labels["video_id"])}
    ids = {v: by_name.get(Path(str(s)).name, v) for s, v in zip(reference["source"], reference["video_id"])
           if v not in known}
    return reference.assign(video_id=reference["video_id"].map(lambda v: ids.get(v, v)))


def rles_of(df: pd.DataFrame) -> list[dict]:
    """Each row's geometry as a COCO RLE (counts bytes), in row order."""
    out = []
    for wkb, h, w in zip(df["geometry"], df["height"], df["width"]):
        rle = geometry_rle(from_wkb(wkb), int(h), int(w))
        out.append({"size": rle["size"], "counts": rle["counts"].encode("ascii")})
    return out


def compare_tables(labels: pd.DataFrame, reference: pd.DataFrame,
                   frames: set[tuple[str, int]] | None = None) -> dict:
    """Mask AP/AP50/AP75 and IDF1 of `labels` against `reference` (label-table DataFrames).

    `frames`: the (video_id, frame) pairs that were labeled (default: those with rows
    in either table).
    """
    labels, reference = labels.reset_index(drop=True), align_videos(labels, reference).reset_index(drop=True)
    keys = set(frames or ()) | set(zip(reference["video_id"], reference["frame"].astype(int))) | set(
        zip(labels["video_id"], labels["frame"].astype(int)))
    image_id = {k: i + 1 for i, k in enumerate(sorted(keys))}
    classes = sorted(set(reference["class_name"]) | set(labels["class_name"]))
    cat = {c: i + 1 for i, c in enumerate(classes)}
    ref_rles, lab_rles = rles_of(reference), rles_of(labels)
    result = {"reference_instances": len(reference), "label_instances": len(labels)}
    result |= _mask_ap(labels, reference, lab_rles, ref_rles, image_id, cat)
    result["IDF1"] = idf1(labels, reference, lab_rles, ref_rles)
    return result


def _mask_ap(labels, reference, lab_rles, ref_rles, image_id, cat) -> dict:
    size = {}
    for df in (reference, labels):
        for v, f, h, w in zip(df["video_id"], df["frame"], df["height"], df["width"]):
            size[(v, int(f))] = (int(h), int(w))
    images = [{"id": i, "height": size.get(k, (1, 1))[0], "width": size.get(k, (1, 1))[1]} for k, i in image_id.items()]
    anns = [{"id": n + 1, "image_id": image_id[(v, int(f))], "category_id": cat[c], "iscrowd": 0,
             "segmentation": _str_counts(r), "area": float(mask_utils.area(r)), "bbox": list(mask_utils.toBbox(r))}
            for n, (v, f, c, r) in enumerate(zip(reference["video_id"], reference["frame"], reference["class_name"],
                                                 ref_rles))]
    dets = [{"image_id": image_id[(v, int(f))], "category_id": cat[c], "segmentation": _str_counts(r), "score": float(s)}
            for v, f, c, r, s in zip(labels["video_id"], labels["frame"], labels["class_name"], lab_rles,
                                     labels["confidence"])]
    if not anns or not dets:
        return {"segm_AP": 0.0, "segm_AP50": 0.0, "segm_AP75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": i} for i in cat.values()]}
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dets), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"segm_AP": float(ev.stats[0]), "segm_AP50": float(ev.stats[1]), "segm_AP75": float(ev.stats[2])}


def _str_counts(rle: dict) -> dict:
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def idf1(labels: pd.DataFrame, reference: pd.DataFrame, lab_rles: list[dict], ref_rles: list[dict]) -> float:
    """IDF1 of label objects against reference objects (see the module docstring)."""
    n_ref, n_lab = len(reference), len(labels)
    if n_ref + n_lab == 0:
        return 1.0
    ref_ids = {o: i for i, o in enumerate(pd.unique(reference["video_id"] + "/" + reference["object_id"]))}
    lab_ids = {o: i for i, o in enumerate(pd.unique(labels["video_id"] + "/" + labels["object_id"]))}
    overlap = np.zeros((len(ref_ids), len(lab_ids)))
    ref_by_frame = reference.groupby(["video_id", "frame"]).indices
    for key, li in labels.groupby(["video_id", "frame"]).indices.items():
        ri = ref_by_frame.get(key)
        if ri is None:
            continue
        iou = mask_utils.iou([lab_rles[i] for i in li], [ref_rles[i] for i in ri], [0] * len(ri))
        for a, b in zip(*np.nonzero(np.asarray(iou) >= IDF1_IOU)):
            r = ref_ids[f"{key[0]}/{reference['object_id'].iat[ri[b]]}"]
            lab = lab_ids[f"{key[0]}/{labels['object_id'].iat[li[a]]}"]
            overlap[r, lab] += 1
    rows, cols = linear_sum_assignment(-overlap) if overlap.size else ([], [])
    return float(2 * overlap[rows, cols].sum() / (n_ref + n_lab))
