"""The evaluate flow: score a model through segflow's own stages on held-out ground truth.

    segflow evaluate --model shapes-demo --seed 3 --frames 100 --json

Without --data it renders a synthetic clip (seeds below 100 are never used for
training) with exact ground truth. It reports mask AP/AP50 (pycocotools COCOeval,
segm) of the filtered model masks, and the fidelity of the polygons segflow would
write: their IoU with the model's masks and their mean vertex count.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click
import numpy as np
import pycocotools.mask as mask_utils
import shapely
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from segflow.errors import SegflowError
from segflow.models.devices import resolve_device
from segflow.models.registry import load_model, resolve_model
from segflow.settings import LabelSettings, default_of
from segflow.contracts import Detections, FrameRange
from segflow.media import probe, read_batches
from segflow.ops.nms import filter_detections
from segflow.ops.polygon import polygonize
from segflow.ops.raster import rasterize
from segflow.models.inference import segment_batches
from segflow.training.evaluate import coco_eval

AP_SCORE_FLOOR = 0.05  # AP integrates over scores: keep low-confidence detections


def to_coco_results(det: Detections, classes: tuple[str, ...], gt: dict) -> list[dict]:
    """Detections -> COCO results, matching model classes to GT categories by name."""
    cat = {c["name"]: c["id"] for c in gt["categories"]}
    image = {im.get("frame_index", 0): im["id"] for im in gt["images"]}
    out = []
    for i in range(len(det)):
        name = classes[det.label[i] - 1] if 1 <= det.label[i] <= len(classes) else None
        if name not in cat or int(det.frame[i]) not in image:
            continue
        rle = dict(det.rles[i])
        rle["counts"] = rle["counts"].decode("ascii") if isinstance(rle["counts"], bytes) else rle["counts"]
        out.append({"image_id": image[int(det.frame[i])], "category_id": cat[name],
                    "segmentation": rle, "score": float(det.score[i])})
    return out


def polygon_fidelity(det: Detections, coarseness: float, width: int, height: int) -> tuple[float, float]:
    """Mean IoU of each written polygon with its model mask, and mean vertex count."""
    polys = polygonize(det, coarseness, width, height)
    ious = []
    for i, wkb in zip(polys.index, polys.wkb):
        mask = mask_utils.decode(det.rles[i]).astype(bool)
        drawn = rasterize(shapely.from_wkb(wkb), height, width)
        ious.append((mask & drawn).sum() / max(1, (mask | drawn).sum()))
    return (float(np.mean(ious)) if ious else 0.0), (float(polys.vertex_count.mean()) if len(polys.index) else 0.0)


@task(name="evaluate-model", cache_policy=NO_CACHE)
def evaluate_task(model: str, video: str, coco_json: str, device: str, settings: LabelSettings) -> dict:
    """Segment the held-out video, filter, score masks and polygons."""
    ref = resolve_model(model)
    dev = resolve_device(device)
    info = probe(video)
    net = load_model(ref, dev)
    det, frames = segment_batches(net, read_batches(info, FrameRange(0, info.frame_count - 1), 4), dev, AP_SCORE_FLOOR)
    det = det.take(filter_detections(det, AP_SCORE_FLOOR, settings.iou_threshold))
    gt = json.loads(Path(coco_json).read_text())
    metrics = {"model_id": ref.model_id, "frames": frames, "detections": len(det)}
    results = to_coco_results(det, ref.classes, gt)
    metrics |= coco_eval(coco_json, results, "segm")
    metrics |= coco_eval(coco_json, [{**r, "bbox": list(mask_utils.toBbox(r["segmentation"]))} for r in results], "bbox")
    written = det.take(np.flatnonzero(det.score >= settings.confidence))
    iou, vertices = polygon_fidelity(written, settings.coarseness, info.width, info.height)
    return metrics | {"polygon_iou_mean": iou, "vertices_mean": vertices, "instances_written": len(written)}


@flow(name="evaluate", log_prints=True)
def evaluate_flow(model: str = default_of("model"), data: str | None = None, seed: int = 3, frames: int = 100,
                  device: str = default_of("device"), confidence: float = default_of("confidence"),
                  coarseness: float = default_of("coarseness"), iou_threshold: float = default_of("iou_threshold")) -> dict:
    """Score `model` on `data` (a COCO JSON of one video) or on a held-out synthetic clip."""
    settings = LabelSettings(model=model, confidence=confidence, coarseness=coarseness, iou_threshold=iou_threshold)
    with tempfile.TemporaryDirectory() as tmp:
        if data is None:
            from segflow.synth import write_clip

            clip = write_clip(tmp, seed=seed, n_frames=frames, size=(480, 640))
            video, coco_json = str(clip.video), str(clip.coco)
        else:
            coco_json = data
            gt = json.loads(Path(data).read_text())
            names = {im["file_name"] for im in gt.get("images", [])}
            if len(names) != 1:
                raise SegflowError(f"--data {data}: expected the COCO JSON of one video (found {len(names)} files)")
            video = str(Path(data).parent / names.pop())
        metrics = evaluate_task(model, video, coco_json, device, settings)
    return {"data": data or f"synth seed {seed}, {frames} frames", **metrics}


@click.command("evaluate")
@click.option("--model", default=default_of("model"), show_default=True, help="Registered model name or checkpoint path.")
@click.option("--data", default=None, help="COCO JSON of one video (default: a held-out synthetic clip).")
@click.option("--seed", type=int, default=3, show_default=True, help="Seed of the synthetic clip (< 100: held out).")
@click.option("--frames", type=int, default=100, show_default=True, help="Frames of the synthetic clip.")
@click.option("--device", default=default_of("device"), show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object as the last line.")
def evaluate(model: str, data: str | None, seed: int, frames: int, device: str, as_json: bool) -> None:
    """Mask AP/AP50 and polygon fidelity of MODEL on held-out data."""
    if frames < 1:
        raise SegflowError(f"--frames {frames}: need at least 1")
    resolve_model(model), resolve_device(device)  # refuse bad values before any work
    metrics = evaluate_flow(model=model, data=data, seed=seed, frames=frames, device=device)
    if not as_json:
        for key, value in metrics.items():
            click.echo(f"{key:>18}: {value:.4f}" if isinstance(value, float) else f"{key:>18}: {value}")
    click.echo(json.dumps(metrics))
