"""Run a torchvision detection model over batches of frames -> `Detections` (masks as RLEs).

`segment_batches` is the loop the segment stage runs: a stock eval-mode torchvision
Mask R-CNN goes through `segflow.models.fast_forward` (no full-frame mask pasting;
bit-identical RLEs), anything else through `model(images)`. Pure torch/numpy: no
Prefect, no disk, no stage imports.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

import numpy as np
import torch

from segflow.contracts import Detections, FrameBatch, Thumbnails
from segflow.ops.appearance import mask_colors
from segflow.ops.shots import frame_thumbnail
from segflow.settings import DEFAULT_SCORE_FLOOR
from segflow.models.fast_forward import (
    MASK_THRESHOLD,
    encode_masks,
    forward_frames,
    local_mask_rles,
    local_masks_supported,
    outputs_to_cpu,
    to_tensors,
)


def outputs_to_detections(outputs: list[dict], batch: FrameBatch, score_floor: float) -> Detections:
    """torchvision detection outputs for one batch -> Detections (masks as RLE).

    Instances scoring below `score_floor` or whose mask is empty after thresholding
    are dropped here; everything else is kept for the filter stage to decide.
    """
    parts = []
    for out, image, frame, ts in zip(outputs, batch.frames, batch.indices, batch.timestamps):
        scores = out["scores"].float().cpu().numpy()
        masks = (out["masks"][:, 0] >= MASK_THRESHOLD).cpu().numpy()
        keep = np.flatnonzero((scores >= score_floor) & masks.any(axis=(1, 2)))
        parts.append(frame_detections(out, scores, keep, frame, ts, encode_masks(masks[keep]), image))
    return Detections.concat(parts)


def frame_detections(out: dict, scores: np.ndarray, keep: np.ndarray, frame: int, ts: float, rles: list[dict],
                     image: np.ndarray) -> Detections:
    """One frame's model output at positions `keep`, with their RLE masks and the mean
    colour of `image` ``(H, W, 3)`` (the frame) under each (the tracker's appearance cue),
    and the frame's thumbnail (`segflow.ops.shots`: the track stage's shot cuts)."""
    n = len(keep)
    det = Detections(
        frame=np.full(n, frame, np.int64),
        timestamp=np.full(n, ts, np.float64),
        label=out["labels"].cpu().numpy()[keep].astype(np.int64),
        score=scores[keep].astype(np.float32),
        boxes=out["boxes"].float().cpu().numpy()[keep].astype(np.float32).reshape(-1, 4),
        rles=rles,
        color=mask_colors(image, rles),
    )
    det.thumbs = Thumbnails(np.array([frame], np.int64), frame_thumbnail(image)[None])  # for shot cuts
    return det


def unpasted_to_detections(outputs: list[dict], sizes: list[tuple[int, int]], batch: FrameBatch, score_floor: float) -> Detections:
    """`forward_unpasted` outputs for one batch -> Detections, as `outputs_to_detections`.

    Runs on the CPU whatever device made the outputs (`outputs_to_cpu` first).
    """
    parts = []
    for out, size, image, frame, ts in zip(outputs, sizes, batch.frames, batch.indices, batch.timestamps):
        scores = out["scores"].float().numpy()
        above = np.flatnonzero(scores >= score_floor)
        rles, nonempty = local_mask_rles(out["masks"][above], out["boxes"][above], size)
        parts.append(frame_detections(out, scores, above[nonempty], frame, ts, rles, image))
    return Detections.concat(parts)


def segment_batches(
    model: torch.nn.Module,
    batches: Iterable[FrameBatch],
    device: torch.device,
    score_floor: float = DEFAULT_SCORE_FLOOR,
    mixed_precision: bool = False,
    overlap: bool | None = None,
) -> tuple[Detections, int]:
    """Run `model` over every batch; returns the detections and the frames run.

    The model's own score threshold is lowered to `score_floor` so nothing the cache
    should keep is cut inside torchvision. A stock torchvision Mask R-CNN skips
    full-frame mask pasting (see `local_mask_rles`); the RLEs are the same. On a GPU
    the CPU part of a batch (mask RLEs) runs in a helper thread while the GPU runs the
    next batch (`overlap`, default: on a GPU only), and `mixed_precision` runs the
    forward in float16 autocast (on a GPU only).
    """
    roi_heads = getattr(model, "roi_heads", None)
    if roi_heads is not None and hasattr(roi_heads, "score_thresh"):
        roi_heads.score_thresh = min(roi_heads.score_thresh, score_floor)
    local = local_masks_supported(model)
    on_gpu = torch.device(device).type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.float16, enabled=mixed_precision and on_gpu)
    parts: list = []
    frames_run = 0
    pending = None
    # One helper thread on a GPU: encoding overlaps the next forward. On the CPU the
    # model already has the cores (several ranges side by side), so it stays inline.
    overlap = on_gpu if overlap is None else overlap
    # The helper's CPU work is per-detection ops far too small to share out: one torch
    # thread (OpenMP keeps the setting per thread), instead of a pool of spinning ones
    # beside the decoder's threads.
    helper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segflow-rle", initializer=torch.set_num_threads,
                                initargs=(1,)) if overlap else nullcontext()
    with helper as pool:
        with torch.inference_mode():
            for batch in batches:
                with autocast:
                    if local:
                        outputs, sizes = forward_frames(model, batch.frames, device)
                    else:
                        outputs = model(to_tensors(batch.frames, device))
                if local:
                    job = (unpasted_to_detections, outputs_to_cpu(outputs), sizes, batch, score_floor)
                else:
                    job = (outputs_to_detections, outputs, batch, score_floor)
                if pool is None:
                    parts.append(job[0](*job[1:]))
                else:
                    if pending is not None:  # at most one batch waits: frames are not piled up
                        parts.append(pending.result())
                    pending = pool.submit(*job)
                frames_run += len(batch.indices)
            if pending is not None:
                parts.append(pending.result())
    return Detections.concat(parts), frames_run
