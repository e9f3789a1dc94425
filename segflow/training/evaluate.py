"""Evaluate a checkpoint against COCO ground truth with pycocotools (segm and bbox AP)."""

from __future__ import annotations

import contextlib
import io
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from segflow.errors import SegflowError
from segflow.models.checkpoint import load_checkpoint
from segflow.training.data import FrameReader, _read_json


def predict_coco(model: torch.nn.Module, classes: tuple[str, ...], coco_json: str | Path, device: str = "cpu",
                 mask_threshold: float = 0.5, batch_size: int = 4) -> tuple[list[dict], float]:
    """Run ``model`` over every image of a COCO file; return COCO results and s/frame.

    Model label ``i + 1`` (= ``classes[i]``) is mapped to the GT category with that name;
    labels without a GT category are dropped. Masks are binarised at ``mask_threshold``
    and RLE-encoded.
    """
    from pycocotools import mask as mask_utils

    path = Path(coco_json)
    gt = _read_json(path)
    cat_by_name = {c["name"]: c["id"] for c in gt["categories"]}
    label_to_cat = {i + 1: cat_by_name.get(c) for i, c in enumerate(classes)}
    reader = FrameReader(cache=True)
    images = sorted(gt["images"], key=lambda im: (im["file_name"], im.get("frame_index", 0)))
    reader.preload(((str(path.parent / im["file_name"]), int(im.get("frame_index", 0))) for im in images))
    results: list[dict] = []
    elapsed = 0.0
    model.eval().to(device)
    for lo in range(0, len(images), batch_size):
        chunk = images[lo: lo + batch_size]
        frames = [reader.read(str(path.parent / im["file_name"]), int(im.get("frame_index", 0))) for im in chunk]
        batch = [torch.from_numpy(f).permute(2, 0, 1).float().div(255).to(device) for f in frames]
        t0 = time.perf_counter()
        with torch.inference_mode():
            outs = model(batch)
        elapsed += time.perf_counter() - t0
        for im, o in zip(chunk, outs):
            masks = (o["masks"][:, 0] >= mask_threshold).cpu().numpy().astype(np.uint8)
            rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0))) if len(masks) else []
            for rle, label, score in zip(rles, o["labels"].tolist(), o["scores"].tolist()):
                cat = label_to_cat.get(label)
                if cat is None:
                    continue
                rle["counts"] = rle["counts"].decode("ascii")
                results.append({"image_id": im["id"], "category_id": cat, "segmentation": rle, "score": float(score),
                                "bbox": [float(v) for v in mask_utils.toBbox(rle)]})
    return results, elapsed / max(1, len(images))


def coco_eval(coco_json: str | Path, results: list[dict], iou_type: str = "segm") -> dict[str, float]:
    """COCOeval summary: AP, AP50, AP75 (and AR100) for ``iou_type``; zeros when no results."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not results:
        return {f"{iou_type}_AP": 0.0, f"{iou_type}_AP50": 0.0, f"{iou_type}_AP75": 0.0, f"{iou_type}_AR100": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints a lot
        gt = COCO(str(coco_json))
        # loadRes takes its bbox branch when a bbox is present; for segm, let it use masks.
        dt = gt.loadRes([{k: v for k, v in r.items() if k != "bbox"} for r in results] if iou_type == "segm" else results)
        ev = COCOeval(gt, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    s = ev.stats
    return {f"{iou_type}_AP": float(s[0]), f"{iou_type}_AP50": float(s[1]), f"{iou_type}_AP75": float(s[2]),
            f"{iou_type}_AR100": float(s[8])}


def evaluate_checkpoint(ckpt: str | Path, coco_json: str | Path, device: str = "cpu",
                        score_thresh: float | None = None) -> dict[str, Any]:
    """Load ``ckpt`` and score it on ``coco_json``: segm/bbox AP, AP50, AP75 and s/frame."""
    if not Path(coco_json).is_file():
        raise SegflowError(f"evaluation data {coco_json}: no such file")
    model, meta = load_checkpoint(ckpt, device=device)
    if score_thresh is not None:
        model.roi_heads.score_thresh = float(score_thresh)
    results, spf = predict_coco(model, meta.classes, coco_json, device=device)
    metrics: dict[str, Any] = {"checkpoint": str(ckpt), "data": str(coco_json), "detections": len(results),
                               "s_per_frame": round(spf, 4)}
    metrics |= coco_eval(coco_json, results, "segm")
    metrics |= coco_eval(coco_json, results, "bbox")
    return metrics


if __name__ == "__main__":  # python -m segflow.training.evaluate CKPT COCO_JSON
    import sys

    torch.set_num_threads(2)
    print(json.dumps(evaluate_checkpoint(sys.argv[1], sys.argv[2]), indent=1))
