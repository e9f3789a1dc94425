"""The evaluate flow's scoring: perfect detections score AP 1.0, polygons stay faithful."""

from __future__ import annotations

import json

import numpy as np

from segflow.cli import main
from segflow.flows.evaluate import polygon_fidelity, to_coco_results
from segflow.synth import CLASSES, generate, write_clip
from segflow.contracts import Detections
from segflow.models.fast_forward import encode_masks
from segflow.training.evaluate import coco_eval


def ground_truth_detections(seed: int, frames: int, size) -> Detections:
    parts = []
    for f in generate(seed, n_frames=frames, size=size):
        n = len(f.instances)
        masks = np.stack([i.mask for i in f.instances]) if n else np.zeros((0, *size), bool)
        parts.append(Detections(
            frame=np.full(n, f.index, np.int64), timestamp=np.zeros(n),
            label=np.array([CLASSES.index(i.class_name) + 1 for i in f.instances], np.int64),
            score=np.linspace(0.99, 0.9, n, dtype=np.float32), boxes=np.zeros((n, 4), np.float32),
            rles=encode_masks(masks),
        ))
    return Detections.concat(parts)


def test_perfect_detections_score_ap_one_and_faithful_polygons(tmp_path):
    size = (160, 192)
    clip = write_clip(tmp_path, seed=5, n_frames=6, size=size)
    det = ground_truth_detections(5, 6, size)
    gt = json.loads(clip.coco.read_text())
    metrics = coco_eval(clip.coco, to_coco_results(det, CLASSES, gt), "segm")
    assert metrics["segm_AP"] > 0.99 and metrics["segm_AP50"] > 0.99
    iou, vertices = polygon_fidelity(det, 0.005, size[1], size[0])
    assert iou >= 0.95 and vertices > 4


def test_evaluate_refuses_an_unknown_model(capsys):
    assert main(["evaluate", "--model", "nope", "--json"]) == 2
    assert "--model nope" in capsys.readouterr().err
