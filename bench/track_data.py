"""Ground truth and detections for bench/tracking.py: segflow.synth videos and the
scripted scenarios of bench/scenes.py, with detections from a model (the label flow's
decode and forward) or from the ground truth with a realistic error model, split as
the filter stage splits them (kept rows, low-score second-pass candidates)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_utils

from segflow.contracts import Detections
from segflow.ops.nms import filter_detections, filter_with_low
from segflow.ops.rle import rle_boxes
from segflow.synth import CLASSES, generate

SIZE = (480, 640)
CONFIDENCE = 0.6
IOU_THRESHOLD = 0.3


@dataclass
class Video:
    """Per-frame ground truth (ids, labels 1..K, RLEs) of one synthetic video."""

    seed: int
    n_frames: int
    n_objects: int | None
    gt_frames: list[tuple[np.ndarray, np.ndarray, list[dict]]]
    masks: list[list[np.ndarray]]  # bool masks per frame (for the noisy detector)
    name: str = ""  # a scenario's name (bench/scenes.py); "" for a synth video
    images: list[np.ndarray] | None = None  # RGB frames (kept for gt-noisy detections' colours)
    crossing: bool = False  # a crossing scenario (0 identity switches expected)

    @property
    def label(self) -> str:
        return self.name or f"seed{self.seed}"


def encode(mask: np.ndarray) -> dict:
    """Bool (H, W) -> COCO RLE (bytes counts)."""
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


def load_video(seed: int, n_frames: int, n_objects: int | None = None, keep_masks: bool = True) -> Video:
    """Ground truth of synthetic video `seed`."""
    frames, masks, images = [], [], []
    for f in generate(seed, n_frames, SIZE, n_objects):
        ids = np.array([i.track_id for i in f.instances], np.int64)
        labels = np.array([CLASSES.index(i.class_name) + 1 for i in f.instances], np.int64)
        frames.append((ids, labels, [encode(i.mask) for i in f.instances]))
        masks.append([i.mask for i in f.instances] if keep_masks else [])
        images.append(f.image if keep_masks else None)
    return Video(seed, n_frames, n_objects, frames, masks, images=images if keep_masks else None)


def _jitter(mask: np.ndarray, k: int) -> np.ndarray:
    """Erode (k < 0) or dilate (k > 0) a mask by |k| px: boundary noise of a real model."""
    if k == 0:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    m = mask.astype(np.uint8)
    m = cv2.dilate(m, kernel, iterations=k) if k > 0 else cv2.erode(m, kernel, iterations=-k)
    return m.astype(bool)


def _parts(mask: np.ndarray) -> list[np.ndarray]:
    """Connected parts of a mask with at least 30 px (a shape split by an occluder bar)."""
    n, lab = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    parts = [lab == i for i in range(1, n)]
    return [p for p in parts if p.sum() >= 30]


def noisy_detections(video: Video, seed: int) -> Detections:
    """Raw detections derived from the ground truth with a realistic error model.

    Per instance: 3% missed outright; the score falls with how much of the object is
    visible (visible area over the object's largest visible area in the video:
    0.93 - 0.5 * (1 - visibility)^2 + N(0, 0.05), 0.15 less under 250 px), so heavily
    hidden or half-out-of-frame instances drop below the confidence and reach only the
    second pass; the mask is eroded or dilated by up to 1 px (2 px above 2000 px area); a shape split by an
    occluder bar is, 25% of the time, detected as separate parts (the smaller ones
    0.25 lower); 5% get a shifted lower-score duplicate (NMS removes most). Per frame:
    Poisson(0.15) false positives (disks of a random class, 8-30 px radius, score
    0.2-0.75). Classes are kept. Seeded by the video seed: same input, same noise.
    """
    rng = np.random.default_rng([seed, 7919])
    h, w = SIZE
    frame_l, label_l, score_l, rle_l = [], [], [], []
    biggest: dict[int, int] = {}
    for (ids, _, _), masks in zip(video.gt_frames, video.masks):
        for i, m in zip(ids, masks):
            biggest[int(i)] = max(biggest.get(int(i), 0), int(m.sum()))

    def add(frame: int, label: int, score: float, mask: np.ndarray) -> None:
        if mask.sum() >= 20:
            frame_l.append(frame), label_l.append(label), score_l.append(float(np.clip(score, 0.05, 0.99)))
            rle_l.append(encode(mask))

    for t, ((ids, labels, _), masks) in enumerate(zip(video.gt_frames, video.masks)):
        for tid, label, mask in zip(ids, labels, masks):
            if rng.random() < 0.03:
                continue
            area = int(mask.sum())
            vis = area / biggest[int(tid)]
            score = 0.93 - 0.5 * (1 - vis) ** 2 + rng.normal(0, 0.05) - (0.15 if area < 250 else 0.0)
            parts = _parts(mask)
            if len(parts) > 1 and rng.random() < 0.25:
                parts.sort(key=lambda p: -int(p.sum()))
                add(t, int(label), score, _jitter(parts[0], int(rng.integers(-1, 2))))
                for p in parts[1:]:
                    add(t, int(label), score - 0.25, _jitter(p, int(rng.integers(-1, 2))))
                continue
            # Boundary error grows with size: a 2 px erosion would erase a small ring's wall.
            m = _jitter(mask, int(rng.integers(-2, 3) if area > 2000 else rng.integers(-1, 2)))
            add(t, int(label), score, m)
            if rng.random() < 0.05:
                add(t, int(label), score - 0.1, np.roll(m, int(rng.integers(2, 5)), axis=int(rng.integers(0, 2))))
        for _ in range(rng.poisson(0.15)):
            r = rng.uniform(8, 30)
            cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
            yy, xx = np.ogrid[:h, :w]
            add(t, int(rng.integers(1, len(CLASSES) + 1)), rng.uniform(0.2, 0.75), (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r)
    n = len(frame_l)
    rles = rle_l
    det = Detections(
        frame=np.asarray(frame_l, np.int64), timestamp=np.asarray(frame_l, np.float64),
        label=np.asarray(label_l, np.int64), score=np.asarray(score_l, np.float32),
        boxes=rle_boxes(rles).astype(np.float32).reshape(n, 4), rles=rles,
    )
    if video.images is not None and all(im is not None for im in video.images):
        det.color = colors_of(det, video.images)
    return det


def colors_of(det: Detections, images) -> np.ndarray:
    """``(N, 3)`` mean colour under each detection's mask on its frame (`images[frame]`), as
    the segment stage measures it."""
    from segflow.ops.appearance import mask_colors

    out = np.zeros((len(det), 3), np.float32)
    for t in np.unique(det.frame):
        i = np.flatnonzero(det.frame == t)
        out[i] = mask_colors(images[int(t)], [det.rles[k] for k in i])
    return out


def clip_frames(clip: Path) -> np.ndarray:
    """``(T, H, W, 3)`` RGB frames of `clip`, decoded as the label flow decodes it."""
    from segflow.contracts import FrameRange
    from segflow.media import probe, read_batches

    info = probe(clip)
    return np.concatenate([b.frames for b in read_batches(info, FrameRange(0, info.frame_count - 1), 8)])


def model_detections(video: Video, work: Path, model: str = "shapes-demo") -> Detections:
    """Raw detections of `model` (the bundled `shapes-demo` by default) on the encoded video (score floor 0.05)."""
    from segflow.models.registry import resolve_model
    from segflow.synth import write_clip

    ref = resolve_model(model)
    cache = work / f"raw_{ref.digest[:12]}_{video.seed:04d}_{video.n_frames}_{video.n_objects}.npz"
    paths = None
    if cache.exists():
        det = _load_raw(cache)
        if det.color is not None:
            return det
        paths = write_clip(work, video.seed, video.n_frames, SIZE, n_objects=video.n_objects)
        det.color = colors_of(det, clip_frames(paths.video))  # a cache written before colours were kept
        _save_raw(det, cache)
        return det
    paths = write_clip(work, video.seed, video.n_frames, SIZE, n_objects=video.n_objects)
    det = detect_clip(paths.video, ref)
    _save_raw(det, cache)
    return det


def detect_clip(clip: Path, ref) -> Detections:
    """Raw detections of model `ref` on every frame of `clip`, decoded as the label flow
    decodes it, with the model's labels mapped to the synthetic classes by name (the
    checkpoint's class order may differ) and other classes dropped."""
    import torch

    from segflow.contracts import FrameRange
    from segflow.media import probe, read_batches
    from segflow.models.inference import segment_batches
    from segflow.models.registry import load_model

    info = probe(clip)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = load_model(ref, device)
    det, _ = segment_batches(net, read_batches(info, FrameRange(0, info.frame_count - 1), 4), device)
    lut = np.array([0] + [CLASSES.index(c) + 1 if c in CLASSES else 0 for c in ref.classes], np.int64)
    det.label = lut[det.label]
    return det.take(np.flatnonzero(det.label > 0))


def load_scenario(name: str, keep_masks: bool = True) -> Video:
    """Ground truth of one scenario of bench/scenes.py."""
    import scenes

    sc = scenes.scenarios()[name]
    frames, masks = [], []
    for _, gt in scenes.render(sc):
        frames.append((np.array([g[0] for g in gt], np.int64), np.array([g[1] for g in gt], np.int64),
                       [encode(g[2]) for g in gt]))
        masks.append([g[2] for g in gt] if keep_masks else [])
    return Video(sc.seed, sc.n_frames, len(sc.objects), frames, masks, name=name, crossing=sc.crossing)


def scenario_detections(video: Video, work: Path, model: str = "shapes-demo") -> Detections:
    """Raw detections of `model` on a scenario's H.264 clip, decoded as the label flow decodes it."""
    import scenes

    from segflow.models.registry import resolve_model

    ref = resolve_model(model)
    cache = work / f"raw_{ref.digest[:12]}_{video.name}.npz"
    if cache.exists():
        det = _load_raw(cache)
        if det.color is None:  # a cache written before colours were kept
            clip, _ = scenes.write(scenes.scenarios()[video.name], work)
            det.color = colors_of(det, clip_frames(clip))
            _save_raw(det, cache)
        return det
    clip, _ = scenes.write(scenes.scenarios()[video.name], work)
    det = detect_clip(clip, ref)
    _save_raw(det, cache)
    return det


def _save_raw(det: Detections, path: Path) -> None:
    extra = {} if det.color is None else {"color": det.color}
    np.savez(path, frame=det.frame, label=det.label, score=det.score, boxes=det.boxes,
             counts=np.array([r["counts"] for r in det.rles], dtype=object), allow_pickle=True, **extra)


def _load_raw(path: Path) -> Detections:
    z = np.load(path, allow_pickle=True)
    rles = [{"size": list(SIZE), "counts": c} for c in z["counts"]]
    return Detections(z["frame"], z["frame"].astype(np.float64), z["label"], z["score"], z["boxes"], rles,
                      z["color"] if "color" in z.files else None)


@dataclass
class Split:
    """Detections as both trackers get them: kept rows plus second-pass candidates."""

    kept: Detections
    low: Detections


def split(raw: Detections, low_score: float, class_agnostic: bool = False) -> Split:
    """The filter stage's kept set (the rows) and the low-score NMS survivors."""
    kept = raw.take(filter_detections(raw, CONFIDENCE, IOU_THRESHOLD, class_agnostic))
    mapped = np.isin(raw.label, np.arange(1, len(CLASSES) + 1))
    lo = filter_with_low(raw, mapped, CONFIDENCE, IOU_THRESHOLD, class_agnostic, low_score)[1]
    return Split(kept, raw.take(lo))
