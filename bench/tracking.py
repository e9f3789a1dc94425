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

The videos and detections are made in `track_data.py`, the scores in `track_metrics.py`.

The last line printed is one JSON object with both trackers' overall scores, the
per-scenario rows and the cost per frame on a 20-object video (segflow and ByteTrack, alternated).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from segflow.contracts import Detections
from segflow.ops.nms import mask_iou
from segflow.ops.rle import rle_boxes
from segflow.ops.tracker import Tracker, TrackerConfig, assign_ids, short_tracks, track_lengths
from segflow.settings import LabelSettings
from track_data import (
    CONFIDENCE, IOU_THRESHOLD, SIZE, Split, Video, load_scenario, load_video, model_detections, noisy_detections,
    scenario_detections, split,
)
from track_metrics import MATCH_IOU_EVAL, score


# ---- the trackers --------------------------------------------------------------------------


def run_segflow(s: Split, config: TrackerConfig) -> np.ndarray:
    """segflow's ids for the kept rows."""
    k, lo = s.kept, s.low
    return assign_ids(k.frame, k.label, k.rles, Tracker(config), lo.frame, lo.label, lo.rles, k.color, lo.color)


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
