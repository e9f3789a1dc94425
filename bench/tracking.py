"""Benchmark segflow's tracker against supervision's ByteTrack on the same detections.

    python bench/tracking.py [--detections model|gt-noisy] [--model NAME|CKPT] [--scenarios NAME ...]
                             [--seeds 0 1 2 3 4] [--frames 120] [--nms both|class-agnostic|per-class]
                             [--objects N] [--work DIR] [tracker knobs]

Needs the bench extra: supervision (< 0.31, which still has `sv.ByteTrack`), motmetrics
and TrackEval (`pip install trackeval`, for HOTA; without it a transcription below).
`--detections` defaults to `model` when the bundled checkpoint is there, else
`gt-noisy`; the first line printed says which.

Two groups of videos. The scenarios of `bench/scenes.py` (drawn there, not by
segflow.synth; each one a thing to survive: a larger object hiding a smaller one while
both move, crossings at several speeds and sizes, full occlusions of 1-10 frames by a
moving panel, two same-class objects swapping places, an exit and re-entry) are the
headline: the JSON's top level scores them, `scenarios` has a row per scenario
(segflow, ByteTrack and the ceiling: IDF1, IDSW, HOTA; `crossing` marks the scenarios
where 0 identity switches are expected) and `crossing_idsw` sums segflow's switches
over those. The model sees each scenario as an H.264 clip, decoded as the label flow
decodes it. `synth` scores the segflow.synth videos below.

Synthetic videos (`segflow.synth`, 480x640) carry exact ground-truth identities through
crossings, occlusions of up to 20 frames, occluder bars that split shapes, and exits
and re-entries. Detections come either from the segment stage's model (`model`:
`shapes-demo` through `segment_batches`, as the label flow runs it) or from the ground
truth with realistic noise (`gt-noisy`: misses, weak detections, mask erosion and
dilation, split parts, duplicates, false positives; classes kept). Either way they go
through the filter stage (`filter_detections`, confidence 0.6, NMS at 0.3) and both
trackers see exactly the same input. Both NMS modes of the label flow are run (`--nms`):
across classes (`--class-agnostic-nms`, reported first and at the JSON's top level) and
per class (under `per_class_nms`). A model that confuses classes
(`shapes-demo` calls some squares rings) leaves cross-class duplicates of one object
after per-class NMS: detection errors that cost both trackers and the ceiling alike;
class-agnostic NMS is the setting to label with such a model. Each mode uses segflow's
tracker as the label flow configures it for that mode (`--track-class-penalty`
follows the NMS mode). Per mode:

* the kept instances (the rows of the label table), plus
* the low-score detections between 0.1 and the confidence that survive NMS (what
  ByteTrack's second pass and segflow's second pass use; they never become rows).
  ByteTrack gets the same lost-track buffer and `track_activation_threshold` 0.5, so
  that it starts tracks from exactly the detections that are rows (>= 0.6); of the
  settings tried (activation 0.25/0.5/0.6, matching 0.7/0.8/0.9) this was the best
  all-round: 0.25 (supervision's default) drowns its first pass in the model's
  low-score duplicates, 0.6 starts no track below 0.7.

Both are scored on the kept instances, with mask IoU as similarity: a kept instance
that ByteTrack does not output (it drops detections it cannot match or start a track
from) gets a fresh one-row id; segflow is scored on the rows its label table holds,
the kept instances less the tracks seen on fewer than `--min-track-length` frames (4,
the label flow's default; the persist stage leaves them out). The detections are
identical, only identities (and those left-out rows) differ.
IDF1, MOTA and IDSW come from py-motmetrics (match at mask IoU >= 0.5); HOTA from
TrackEval's `HOTA` metric when it is importable, else from `hota_fields()` below, a
transcription of TrackEval's definition (mean over alpha = 0.05..0.95 of
sqrt(DetA * AssA), global alignment score, mask IoU similarity) that gives identical
numbers (checked on every run where both are there). The `ceiling` row scores the
ground-truth identities on the same detections: what is left between it and 1.0 is
detection error that no tracker can remove.

The last line printed is one JSON object with both trackers' overall scores, the
per-scenario rows and the cost per frame on a 20-object video (segflow and ByteTrack, alternated).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_utils

from segflow.synth import CLASSES, generate
from segflow.contracts import Detections
from segflow.ops.nms import mask_iou
from segflow.ops.rle import rle_boxes
from segflow.ops.tracker import Tracker, TrackerConfig, assign_ids, short_tracks, track_lengths
from segflow.settings import LabelSettings
from segflow.ops.nms import filter_detections, filter_with_low

SIZE = (480, 640)
CONFIDENCE = 0.6
IOU_THRESHOLD = 0.3
MATCH_IOU_EVAL = 0.5  # a hypothesis matches ground truth at mask IoU >= this (CLEAR, Identity)


# ---- ground truth and detections --------------------------------------------------------


@dataclass
class Video:
    """Per-frame ground truth (ids, labels 1..K, RLEs) of one synthetic video."""

    seed: int
    n_frames: int
    n_objects: int | None
    gt_frames: list[tuple[np.ndarray, np.ndarray, list[dict]]]
    masks: list[list[np.ndarray]]  # bool masks per frame (for the noisy detector)
    name: str = ""  # a scenario's name (bench/scenes.py); "" for a synth video
    crossing: bool = False  # a crossing scenario (0 identity switches expected)

    @property
    def label(self) -> str:
        return self.name or f"seed{self.seed}"


def encode(mask: np.ndarray) -> dict:
    """Bool (H, W) -> COCO RLE (bytes counts)."""
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


def load_video(seed: int, n_frames: int, n_objects: int | None = None, keep_masks: bool = True) -> Video:
    """Ground truth of synthetic video `seed`."""
    frames, masks = [], []
    for f in generate(seed, n_frames, SIZE, n_objects):
        ids = np.array([i.track_id for i in f.instances], np.int64)
        labels = np.array([CLASSES.index(i.class_name) + 1 for i in f.instances], np.int64)
        frames.append((ids, labels, [encode(i.mask) for i in f.instances]))
        masks.append([i.mask for i in f.instances] if keep_masks else [])
    return Video(seed, n_frames, n_objects, frames, masks)


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
    return Detections(
        frame=np.asarray(frame_l, np.int64), timestamp=np.asarray(frame_l, np.float64),
        label=np.asarray(label_l, np.int64), score=np.asarray(score_l, np.float32),
        boxes=rle_boxes(rles).astype(np.float32).reshape(n, 4), rles=rles,
    )


def model_detections(video: Video, work: Path, model: str = "shapes-demo") -> Detections:
    """Raw detections of `model` (the bundled `shapes-demo` by default) on the encoded video (score floor 0.05)."""
    from segflow.models.registry import resolve_model
    from segflow.synth import write_clip

    ref = resolve_model(model)
    cache = work / f"raw_{ref.digest[:12]}_{video.seed:04d}_{video.n_frames}_{video.n_objects}.npz"
    if cache.exists():
        return _load_raw(cache)
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
        return _load_raw(cache)
    clip, _ = scenes.write(scenes.scenarios()[video.name], work)
    det = detect_clip(clip, ref)
    _save_raw(det, cache)
    return det


def _save_raw(det: Detections, path: Path) -> None:
    np.savez(path, frame=det.frame, label=det.label, score=det.score, boxes=det.boxes,
             counts=np.array([r["counts"] for r in det.rles], dtype=object), allow_pickle=True)


def _load_raw(path: Path) -> Detections:
    z = np.load(path, allow_pickle=True)
    rles = [{"size": list(SIZE), "counts": c} for c in z["counts"]]
    return Detections(z["frame"], z["frame"].astype(np.float64), z["label"], z["score"], z["boxes"], rles)


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


# ---- the trackers --------------------------------------------------------------------------


def run_segflow(s: Split, config: TrackerConfig) -> np.ndarray:
    """segflow's ids for the kept rows."""
    k, lo = s.kept, s.low
    return assign_ids(k.frame, k.label, k.rles, Tracker(config), lo.frame, lo.label, lo.rles)


def table_rows(kept: Detections, ids: np.ndarray, min_length: int, n_frames: int) -> np.ndarray:
    """Positions of the kept rows that segflow's label table holds: tracks shorter than
    `min_length` frames are left out (`--min-track-length`, as the persist stage does)."""
    drop = short_tracks(track_lengths(ids, kept.frame), min_length, 0, n_frames - 1)
    return np.flatnonzero(~np.isin(ids, np.fromiter(drop, np.int64, len(drop))))


BYTETRACK_ACTIVATION = CONFIDENCE - 0.1  # ByteTrack starts tracks at activation + 0.1 = the confidence


def run_bytetrack(
    s: Split, n_frames: int, track_buffer: int, low_score: float, activation: float = BYTETRACK_ACTIVATION
) -> np.ndarray:
    """supervision ByteTrack's ids for the kept rows (one fresh id for rows it drops).

    ByteTrack sees kept and low-score detections alike (boxes from the masks, scores).
    Its tracks are mapped back to the kept rows only (Hungarian on box IoU >= 0.5, as
    `update_with_detections` does over all inputs), so an overlapping low-score
    duplicate cannot take a kept row's id in the mapping.
    """
    import supervision as sv
    from scipy.optimize import linear_sum_assignment
    from torchvision.ops import box_iou
    import torch

    # lost_track_buffer is ours, in frames (frame_rate=30 makes it count frames).
    with warnings.catch_warnings():  # sv.ByteTrack is deprecated in favour of `trackers`
        warnings.simplefilter("ignore")
        tracker = sv.ByteTrack(track_activation_threshold=activation, lost_track_buffer=track_buffer, frame_rate=30)
    k, lo = s.kept, s.low
    ids = np.full(len(k), -1, np.int64)
    for t in range(n_frames):
        ik, il = np.flatnonzero(k.frame == t), np.flatnonzero(lo.frame == t)
        il = il[lo.score[il] > low_score] if low_score > 0.1 else il  # ByteTrack's own floor is 0.1
        kb = rle_boxes([k.rles[i] for i in ik]).reshape(-1, 4)
        xyxy = np.concatenate([kb, rle_boxes([lo.rles[i] for i in il]).reshape(-1, 4)])
        scores = np.concatenate([k.score[ik], lo.score[il]]).astype(np.float32)
        tracks = tracker.update_with_tensors(np.hstack([xyxy, scores[:, None]]).astype(np.float32))
        if not tracks or not len(ik):
            continue
        tb = np.asarray([tr.tlbr for tr in tracks], np.float64)
        iou = box_iou(torch.from_numpy(kb), torch.from_numpy(tb)).numpy()
        rows, cols = linear_sum_assignment(-iou)
        for r, c in zip(rows, cols):
            if iou[r, c] >= 0.5:
                ids[ik[r]] = tracks[c].external_track_id
    fresh = ids.max(initial=0) + 1 + np.arange(int((ids < 0).sum()))
    ids[ids < 0] = fresh
    return ids


def oracle_ids(video: Video, kept: Detections) -> np.ndarray:
    """Ground-truth ids for the kept rows (best mask IoU >= 0.5 per frame), a fresh id otherwise.

    Scoring these gives the ceiling any tracker can reach on these detections: what is
    left between it and 1.0 is detection error (misses, false positives, fragments).
    """
    from scipy.optimize import linear_sum_assignment

    ids = np.zeros(len(kept), np.int64)
    fresh = 1_000_000
    for t, (gid, _, grles) in enumerate(video.gt_frames):
        idx = np.flatnonzero(kept.frame == t)
        iou = mask_iou(grles, [kept.rles[i] for i in idx])
        r, c = linear_sum_assignment(-iou) if iou.size else (np.zeros(0, int), np.zeros(0, int))
        for i in range(len(idx)):
            ids[idx[i]] = fresh = fresh + 1
        for a, b in zip(r, c):
            if iou[a, b] >= MATCH_IOU_EVAL:
                ids[idx[b]] = gid[a]
    return ids


# ---- metrics ---------------------------------------------------------------------------------


@dataclass
class Seq:
    """One sequence prepared for scoring: per frame gt ids, hyp ids and IoU matrix."""

    gt_ids: list[np.ndarray]
    hyp_ids: list[np.ndarray]
    sims: list[np.ndarray]


def prepare(video: Video, kept: Detections, ids: np.ndarray) -> Seq:
    """Per-frame ground truth vs hypothesis ids with their mask IoU."""
    g, h, s = [], [], []
    for t, (gid, _, grles) in enumerate(video.gt_frames):
        idx = np.flatnonzero(kept.frame == t)
        g.append(gid), h.append(ids[idx])
        s.append(mask_iou(grles, [kept.rles[i] for i in idx]))
    return Seq(g, h, s)


def clear_identity(seqs: list[Seq], names: list[str]):
    """py-motmetrics over all sequences: a summary DataFrame with an OVERALL row."""
    import motmetrics as mm

    accs = []
    for seq in seqs:
        acc = mm.MOTAccumulator(auto_id=True)
        for g, h, s in zip(seq.gt_ids, seq.hyp_ids, seq.sims):
            dist = np.where(s >= MATCH_IOU_EVAL, 1.0 - s, np.nan)
            acc.update(g.tolist(), h.tolist(), dist)
        accs.append(acc)
    mh = mm.metrics.create()
    return mh.compute_many(accs, names=names, metrics=["idf1", "mota", "num_switches"], generate_overall=True)


ALPHAS = np.arange(0.05, 0.99, 0.05)


def hota_fields(seq: Seq) -> dict:
    """TrackEval's HOTA per-sequence counts (a transcription of `HOTA.eval_sequence`)."""
    gmap = {v: i for i, v in enumerate(sorted({int(x) for g in seq.gt_ids for x in g}))}
    hmap = {v: i for i, v in enumerate(sorted({int(x) for h in seq.hyp_ids for x in h}))}
    ng, nh, na = len(gmap), len(hmap), len(ALPHAS)
    res = {k: np.zeros(na) for k in ("TP", "FN", "FP", "LocA")}
    n_gt = sum(len(g) for g in seq.gt_ids)
    n_hyp = sum(len(h) for h in seq.hyp_ids)
    if n_hyp == 0 or n_gt == 0:
        res["FN"][:] = n_gt
        res["FP"][:] = n_hyp
        res["AssA"] = np.zeros(na) if n_gt or n_hyp else np.ones(na)
        res["LocA"][:] = 1.0
        return res
    potential = np.zeros((ng, nh))
    gt_count = np.zeros((ng, 1))
    hyp_count = np.zeros((1, nh))
    gi_all = [np.array([gmap[int(x)] for x in g], np.int64) for g in seq.gt_ids]
    hi_all = [np.array([hmap[int(x)] for x in h], np.int64) for h in seq.hyp_ids]
    for gi, hi, sim in zip(gi_all, hi_all, seq.sims):
        denom = sim.sum(0)[None, :] + sim.sum(1)[:, None] - sim
        iou = np.zeros_like(sim)
        np.divide(sim, denom, out=iou, where=denom > np.finfo(float).eps)
        potential[gi[:, None], hi[None, :]] += iou
        gt_count[gi] += 1
        hyp_count[0, hi] += 1
    global_score = potential / (gt_count + hyp_count - potential)
    matches = np.zeros((na, ng, nh))
    for gi, hi, sim in zip(gi_all, hi_all, seq.sims):
        if len(gi) == 0 or len(hi) == 0:
            res["FN"] += len(gi)
            res["FP"] += len(hi)
            continue
        score = global_score[gi[:, None], hi[None, :]] * sim
        r, c = linear_sum_assignment_max(score)
        for a, alpha in enumerate(ALPHAS):
            ok = sim[r, c] >= alpha - np.finfo(float).eps
            n = int(ok.sum())
            res["TP"][a] += n
            res["FN"][a] += len(gi) - n
            res["FP"][a] += len(hi) - n
            if n:
                res["LocA"][a] += sim[r[ok], c[ok]].sum()
                matches[a, gi[r[ok]], hi[c[ok]]] += 1
    assa = np.zeros(na)
    for a in range(na):
        m = matches[a]
        ass_a = m / np.maximum(1, gt_count + hyp_count - m)
        assa[a] = (m * ass_a).sum() / max(1, res["TP"][a])
    res["AssA"] = assa
    res["LocA"] = np.maximum(1e-10, res["LocA"]) / np.maximum(1e-10, res["TP"])
    return res


def linear_sum_assignment_max(score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from scipy.optimize import linear_sum_assignment

    return linear_sum_assignment(-score)


def hota_combined(per_seq: list[dict]) -> float:
    """HOTA over several sequences, combined as TrackEval combines them."""
    tp = sum(r["TP"] for r in per_seq)
    fn = sum(r["FN"] for r in per_seq)
    fp = sum(r["FP"] for r in per_seq)
    assa = sum(r["AssA"] * r["TP"] for r in per_seq) / np.maximum(1e-10, tp)
    deta = tp / np.maximum(1.0, tp + fn + fp)
    return float(np.mean(np.sqrt(deta * assa)))


def hota_trackeval(seqs: list[Seq]) -> float | None:
    """HOTA from TrackEval itself, or None when it is not importable."""
    try:
        from trackeval.metrics import HOTA
    except Exception:
        return None
    metric = HOTA()
    results = {}
    for n, seq in enumerate(seqs):
        gmap = {v: i for i, v in enumerate(sorted({int(x) for g in seq.gt_ids for x in g}))}
        hmap = {v: i for i, v in enumerate(sorted({int(x) for h in seq.hyp_ids for x in h}))}
        data = {
            "num_timesteps": len(seq.gt_ids), "num_gt_ids": len(gmap), "num_tracker_ids": len(hmap),
            "num_gt_dets": sum(len(g) for g in seq.gt_ids), "num_tracker_dets": sum(len(h) for h in seq.hyp_ids),
            "gt_ids": [np.array([gmap[int(x)] for x in g], int) for g in seq.gt_ids],
            "tracker_ids": [np.array([hmap[int(x)] for x in h], int) for h in seq.hyp_ids],
            "similarity_scores": seq.sims,
        }
        results[str(n)] = metric.eval_sequence(data)
    return float(np.mean(metric.combine_sequences(results)["HOTA"]))


def score(videos: list[Video], kept: list[Detections], ids: list[np.ndarray]) -> dict:
    """HOTA, IDF1, MOTA, IDSW over all videos, plus per-video rows."""
    seqs = [prepare(v, k, i) for v, k, i in zip(videos, kept, ids)]
    names = [v.label for v in videos]
    summary = clear_identity(seqs, names)
    fields = [hota_fields(s) for s in seqs]
    ours = hota_combined(fields)
    te = hota_trackeval(seqs)
    if te is not None and abs(te - ours) > 1e-6:
        print(f"warning: TrackEval HOTA {te:.6f} != transcription {ours:.6f}", file=sys.stderr)
    per = {n: {"HOTA": hota_combined([f]), "IDF1": float(summary.loc[n, "idf1"]),
               "MOTA": float(summary.loc[n, "mota"]), "IDSW": int(summary.loc[n, "num_switches"])}
           for n, f in zip(names, fields)}
    overall = {
        "HOTA": round(te if te is not None else ours, 4),
        "IDF1": round(float(summary.loc["OVERALL", "idf1"]), 4),
        "MOTA": round(float(summary.loc["OVERALL", "mota"]), 4),
        "IDSW": int(summary.loc["OVERALL", "num_switches"]),
    }
    return {"overall": overall, "per_video": per, "hota_source": "TrackEval" if te is not None else "transcription"}


# ---- cost --------------------------------------------------------------------------------------


def tracking_cost_ms(
    config: TrackerConfig, n_frames: int = 100, n_objects: int = 20, seed: int = 1000, reps: int = 3
) -> dict[str, float]:
    """Time per frame (ms) of segflow's tracker and of ByteTrack on one gt-noisy video with
    `n_objects` shapes, the same kept and low-score detections for both; the two are
    alternated `reps` times (the machine is shared: both see the same load) and the
    best of each is kept. Either side's time is the whole call as the bench makes it
    (segflow: `assign_ids` on RLE masks; ByteTrack: boxes from the masks, its update,
    and the mapping of its tracks back to the rows)."""
    video = load_video(seed, n_frames, n_objects=n_objects)
    s = split(noisy_detections(video, seed), config.low_score)
    times: dict[str, list[float]] = {"segflow": [], "bytetrack": []}
    for _ in range(reps):
        t0 = time.perf_counter()
        run_segflow(s, config)
        times["segflow"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        run_bytetrack(s, n_frames, config.track_buffer, config.low_score)
        times["bytetrack"].append(time.perf_counter() - t0)
    return {k: round(min(v) * 1000 / n_frames, 3) for k, v in times.items()}


# ---- main --------------------------------------------------------------------------------------


def default_source() -> str:
    """`model` when the bundled checkpoint is there, else `gt-noisy`."""
    try:
        from segflow.models.registry import resolve_model

        resolve_model("shapes-demo")
        return "model"
    except Exception:
        return "gt-noisy"


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; prints the tables and, last, one JSON line."""
    import scenes

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--detections", choices=["model", "gt-noisy"], default=None)
    p.add_argument("--model", default="shapes-demo", help="model for --detections model: a name or a checkpoint path")
    p.add_argument("--scenarios", nargs="*", default=list(scenes.scenarios()),
                   help="scenarios of bench/scenes.py (default: all; none: skip them)")
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4],
                   help="segflow.synth videos (none: skip them)")
    p.add_argument("--frames", type=int, default=120, help="frames per segflow.synth video")
    p.add_argument("--objects", type=int, default=None, help="shapes per synth video (default: seeded 3..8)")
    p.add_argument("--work", type=Path, default=None,
                   help="keep clips and model detections here (reruns skip the model); default: a temporary folder")
    p.add_argument("--track-buffer", type=int, default=TrackerConfig.track_buffer)
    p.add_argument("--match-iou", type=float, default=TrackerConfig.match_iou)
    p.add_argument("--min-track-length", type=int, default=LabelSettings.model_fields["min_track_length"].default,
                   help="segflow's table leaves out tracks seen on fewer frames (the persist stage's rule)")
    p.add_argument("--low-score", type=float, default=TrackerConfig.low_score)
    p.add_argument("--reid-gate", type=float, default=TrackerConfig.reid_gate)
    p.add_argument("--class-penalty", type=float, default=None,
                   help="segflow's --track-class-penalty (default: the label flow's, by NMS mode)")
    p.add_argument("--nms", choices=["both", "class-agnostic", "per-class"], default="both",
                   help="the filter stage's NMS mode(s) to run; the JSON's top level is class-agnostic when run")
    p.add_argument("--no-cost", action="store_true", help="skip the 20-object timing")
    a = p.parse_args(argv)
    unknown = sorted(set(a.scenarios) - set(scenes.scenarios()))
    if unknown:
        p.error(f"unknown scenario(s) {unknown}; known: {sorted(scenes.scenarios())}")
    source = a.detections or default_source()
    print(f"detections: {source}{' of ' + a.model if source == 'model' else ''}  (confidence {CONFIDENCE}, "
          f"NMS {IOU_THRESHOLD}, low score {a.low_score})")
    print(f"scenarios: {a.scenarios}; synth videos: seeds {a.seeds}, {a.frames} frames, {SIZE[0]}x{SIZE[1]}")
    if a.work is None:  # clips and model detections go away with the run
        with tempfile.TemporaryDirectory(prefix="segflow-bench-") as tmp:
            return run(a, source, Path(tmp))
    a.work.mkdir(parents=True, exist_ok=True)
    return run(a, source, a.work)


def tracker_for(a: argparse.Namespace, class_agnostic: bool) -> TrackerConfig:
    """segflow's tracker as the label flow configures it for this NMS mode."""
    penalty = LabelSettings(class_agnostic_nms=class_agnostic, track_class_penalty=a.class_penalty).class_penalty
    return TrackerConfig(match_iou=a.match_iou, track_buffer=a.track_buffer,
                         low_score=a.low_score, reid_gate=a.reid_gate, class_penalty=penalty)


def run(a: argparse.Namespace, source: str, work: Path) -> dict:
    """Both trackers over the videos, per NMS mode; prints the tables and, last, one JSON line.

    The JSON's top level (`segflow`, `bytetrack`, `ceiling`) is the scenarios' overall
    score when scenarios were run, else the synth videos'; `scenarios` has each
    scenario's row, `synth` the synth videos' overall."""
    groups: dict[str, tuple[list[Video], list[Detections]]] = {}
    if a.scenarios:
        vids = [load_scenario(n, keep_masks=source == "gt-noisy") for n in a.scenarios]
        groups["scenarios"] = (vids, [noisy_detections(v, v.seed) if source == "gt-noisy"
                                      else scenario_detections(v, work, a.model) for v in vids])
    if a.seeds:
        vids = [load_video(seed, a.frames, a.objects, keep_masks=source == "gt-noisy") for seed in a.seeds]
        groups["synth"] = (vids, [noisy_detections(v, v.seed) if source == "gt-noisy"
                                  else model_detections(v, work, a.model) for v in vids])
    modes = {"both": [True, False], "class-agnostic": [True], "per-class": [False]}[a.nms]
    results = {agnostic: {g: compare(a, *groups[g], agnostic, g) for g in groups} for agnostic in modes}
    first = results[modes[0]]
    cost = None if a.no_cost else tracking_cost_ms(tracker_for(a, modes[0]))
    ms = None if cost is None else cost["segflow"]
    if cost is not None:
        print(f"\ntracking cost, 20 objects, gt-noisy detections, alternated, best of 3: segflow {cost['segflow']} "
              f"ms/frame, ByteTrack {cost['bytetrack']} ms/frame")
    top = first.get("scenarios") or first["synth"]
    out = {"segflow": top["segflow"], "bytetrack": top["bytetrack"], "ceiling": top["ceiling"],
           "nms": "class-agnostic" if modes[0] else "per-class", "ms_per_frame_20_objects": ms,
           "bytetrack_ms_per_frame_20_objects": None if cost is None else cost["bytetrack"], "detections": source}
    if "scenarios" in first:
        out["scenarios"] = first["scenarios"]["per_video"]
        out["crossing_idsw"] = sum(r["segflow"]["IDSW"] for n, r in first["scenarios"]["per_video"].items()
                                   if r["crossing"])
    if "synth" in first:
        out["synth"] = {k: first["synth"][k] for k in ("segflow", "bytetrack", "ceiling")}
    if len(modes) == 2:
        out["per_class_nms"] = {g: {k: r[k] for k in ("segflow", "bytetrack", "ceiling")}
                                for g, r in results[False].items()}
    print(json.dumps(out))
    return out


def _short(m: dict) -> dict:
    return {"IDF1": round(m["IDF1"], 4), "IDSW": m["IDSW"], "HOTA": round(m["HOTA"], 4)}


def compare(a: argparse.Namespace, videos: list[Video], raws: list[Detections], agnostic: bool, group: str) -> dict:
    """segflow, ByteTrack and the ceiling on one group of videos and one NMS mode's
    detections; prints its table; overall scores and per-video rows."""
    config = tracker_for(a, agnostic)
    print(f"\n## {group}, NMS {'across classes (--class-agnostic-nms)' if agnostic else 'per class'}; "
          f"segflow {config}")
    kept, ours, theirs, ceil, rows = [], [], [], [], []
    for video, raw in zip(videos, raws):
        s = split(raw, a.low_score, agnostic)
        kept.append(s.kept)
        ids = run_segflow(s, config)
        keep = table_rows(s.kept, ids, a.min_track_length, video.n_frames)
        rows.append(s.kept.take(keep))
        ours.append(ids[keep])
        theirs.append(run_bytetrack(s, video.n_frames, a.track_buffer, a.low_score))
        ceil.append(oracle_ids(video, s.kept))
        n_gt = sum(len(g[0]) for g in video.gt_frames)
        n_obj = len({int(i) for g in video.gt_frames for i in g[0]})
        print(f"  {video.label}: {n_obj} objects, {n_gt} gt instances, {len(s.kept)} kept detections, "
              f"{len(s.low)} low-score; segflow ids {len(set(ours[-1].tolist()))} "
              f"({len(s.kept) - len(keep)} rows of tracks under {a.min_track_length} frames left out)")
    res = {"segflow": score(videos, rows, ours), "bytetrack": score(videos, kept, theirs),
           "ceiling": score(videos, kept, ceil)}
    print(f"HOTA from {res['segflow']['hota_source']}; IDF1/MOTA/IDSW from py-motmetrics at mask IoU >= {MATCH_IOU_EVAL}")
    print()
    w = max(10, *(len(v.label) for v in videos))
    head = f"{'HOTA':>6} {'IDF1':>6} {'MOTA':>6} {'IDSW':>5}"
    print(f"{'video':<{w}} | {head} | {head} | {head}")
    print(f"{'':<{w}} | {'segflow':^26} | {'ByteTrack (supervision)':^26} | {'ceiling (true ids)':^26}")
    for n in [v.label for v in videos] + ["OVERALL"]:
        cells = [res[t]["overall"] if n == "OVERALL" else res[t]["per_video"][n] for t in res]
        print(f"{n:<{w}} | " + " | ".join(f"{c['HOTA']:6.3f} {c['IDF1']:6.3f} {c['MOTA']:6.3f} {c['IDSW']:5d}"
                                          for c in cells))
    per = {v.label: {"crossing": v.crossing, "objects": len({int(i) for g in v.gt_frames for i in g[0]}),
                     "segflow_ids": len(set(o.tolist())),
                     **{t: _short(res[t]["per_video"][v.label]) for t in res}} for v, o in zip(videos, ours)}
    return {"segflow": res["segflow"]["overall"], "bytetrack": res["bytetrack"]["overall"],
            "ceiling": res["ceiling"]["overall"], "per_video": per}


if __name__ == "__main__":
    main()
