"""Scores of bench/tracking.py: IDF1, MOTA, IDSW (py-motmetrics) and HOTA (TrackEval, or
`hota_fields`, a transcription of its definition) of track ids against ground truth, on
mask IoU."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from segflow.contracts import Detections
from segflow.ops.nms import mask_iou
from track_data import Video

MATCH_IOU_EVAL = 0.5  # a hypothesis matches ground truth at mask IoU >= this (CLEAR, Identity)


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
