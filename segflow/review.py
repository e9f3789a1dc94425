"""The review queue: where a person checking segflow's labels should look first.

    rows = review_rows(df, confidence=0.5, iou_threshold=0.4)     # per-instance priority + signals
    objects, frames = review_queue(df, confidence=0.5, iou_threshold=0.4)

Every signal is computed from the label table alone (no model, no pixels), per video:

- score: a confidence just above the run's threshold (`score 0.61 near threshold`);
- class: the class the model gave on a frame differs from the object's class
  (`frame_class_name` vs `class_name`; without that column, the object's majority class);
- overlap: the instance overlaps another one on its frame almost as much as the NMS
  IoU threshold allows (a near-duplicate that NMS barely kept);
- jump: the area or the box centre changes suddenly from the object's previous frame;
- gap / edge / short: the track is broken (absent on labeled frames between two of its
  frames), starts or ends in the middle of the labeled frames (the object count changes
  there), or is only a few frames long;
- still: the object stays where it is while the video's other objects move: its drift
  (the diagonal of the span of its box centres over the frames it spans, in units of its
  size sqrt(area)) is under STILL_DRIFT per frame while the median drift of the video's
  tracked objects (at least STILL_MIN_OBJECTS of STILL_MIN_FRAMES frames or more, itself
  included) is over STILL_MOVING. A steady, confident false object (a pattern on the
  background, a patch of background fenced by occluders, a poster, a reflection taken for
  an object over a whole clip) fires no other signal: its score is high, its class never
  flips, its track is whole. A really parked object among moving ones is raised too (by
  design: one look at it clears all its frames); with fewer than STILL_MIN_OBJECTS
  objects (the tests' three-object clip, whose static square is real) nothing is called
  still;
- nested: NESTED_SHARE of the instance's box lies inside the box of a larger instance on
  its frame: a hole or a painted part taken for an object of its own (the disk inside a
  ring), a piece of an object labeled apart. Real nesting (a rider on a horse) raises it
  too.

Each signal is a strength in [0, 1]; a row's priority is 1 - prod(1 - weight * signal),
so it is in [0, 1] and any one strong signal ranks it high. An object's priority is the
sum of its rows' (a long track that is wrong throughout comes before a short one).
`review_rows` is what `persist` writes to the `review_priority` column (for the frames
of one range, the only ones it sees); `review_queue` ranks whole videos; `queue_of`
ranks an output folder's (what `segflow review` lists and every label run publishes).
How much of what is wrong the queue puts first is `bench/review.py` (figures in
bench/RESULTS.md: still and nested were chosen on seeds 5-43, measured on 44-55).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from segflow.ops.pairs import nested_in_larger, pair_iou, same_frame_pairs
from segflow.settings import default_of  # the label run's defaults (one definition)

SCORE_MARGIN = 0.2  # scores within this of the confidence threshold are "borderline"
SHORT_TRACK = 5  # frames; shorter tracks (in videos of at least 2x this) are suspicious
WEIGHTS = {"score": 0.6, "class": 0.8, "overlap": 0.7, "jump": 0.5, "gap": 0.5, "edge": 0.3, "short": 0.6,
           "still": 0.6, "nested": 0.4}
STILL_DRIFT = 0.005  # sizes/frame (half its size in 100 frames): below it an object is at rest (1 at 0, 0 here)
STILL_MOVING = 0.01  # sizes/frame: the video's median drift above which its objects "move"
STILL_MIN_FRAMES = 10  # frames an object needs for its drift to count (own and the reference's)
STILL_MIN_OBJECTS = 4  # objects of STILL_MIN_FRAMES+ frames (one and three others) a video needs to say "others move"
NESTED_SHARE = 0.9  # of a box's area inside a larger instance's box: "nested" in it
SIGNALS = tuple(WEIGHTS)
HIGHER_SHARE = 0.25  # of an overlap's signal for the higher-scored instance of the pair


@dataclass(frozen=True)
class Thresholds:
    """The run settings the signals are measured against."""

    confidence: float = default_of("confidence")
    iou_threshold: float = default_of("iou_threshold")


def review_rows(df: pd.DataFrame, confidence: float = default_of("confidence"), iou_threshold: float = default_of("iou_threshold"),
                frames: dict[str, np.ndarray] | None = None, open_ends: bool = False) -> pd.DataFrame:
    """Per-row signals (columns SIGNALS, float in [0, 1]) and `priority` (float32), row-aligned with `df`.

    `df` needs video_id, frame, object_id, class_name, confidence, x0, y0, x1, y1,
    area_px and geometry (WKB); `frame_class_name` is used when present. `frames`
    maps video_id -> its labeled frames (default: the frames present in `df`).
    `open_ends`: the first and last labeled frame are a window's edges, not the
    video's, so objects there are not counted as appearing or leaving.
    """
    th = Thresholds(confidence, iou_threshold)
    n = len(df)
    sig = {name: np.zeros(n) for name in SIGNALS}
    if n:
        closeness = np.clip((th.confidence + SCORE_MARGIN - df["confidence"].to_numpy(float)) / SCORE_MARGIN, 0, 1)
        sig["score"] = closeness ** 2  # 1 at the threshold, 0.25 halfway up the margin
        sig["class"] = (frame_classes(df).to_numpy() != object_classes(df).to_numpy()).astype(float)
        boxes = df[["x0", "y0", "x1", "y1"]].to_numpy(float)
        pairs = same_frame_pairs(pd.factorize(df["video_id"])[0], pd.factorize(df["frame"])[0])
        sig["overlap"] = _overlap_signal(df, th.iou_threshold, boxes, pairs)
        sig["nested"] = nested_in_larger(boxes, df["area_px"].to_numpy(float), *pairs, NESTED_SHARE)
        videos = _tracked_videos(df, frames)
        if videos:
            objects = pd.factorize(df["object_id"], sort=False)[0]
            frame = df["frame"].to_numpy(np.int64)
            rows = Rows(objects, frame, (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2,
                        df["area_px"].to_numpy(float))
            for vid, ii in videos:
                labeled = np.unique(frames[vid]) if frames and vid in frames else np.unique(frame[ii])
                _track_signals(rows, ii, labeled, open_ends, sig)
    out = pd.DataFrame(sig, index=df.index)
    weights = np.array([WEIGHTS[s] for s in SIGNALS])
    out["priority"] = (1.0 - np.prod(1.0 - out[list(SIGNALS)].to_numpy() * weights, axis=1)).astype(np.float32)
    return out


@dataclass(frozen=True)
class Rows:
    """The columns of a table's rows the track signals read, each (N,): `objects` the
    object_id's code (-1 where null), `frame`, box centre `cx`, `cy`, `area` (area_px)."""

    objects: np.ndarray
    frame: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    area: np.ndarray


def _tracked_videos(df: pd.DataFrame, frames: dict[str, np.ndarray] | None) -> list[tuple[str, np.ndarray]]:
    """(video_id, row positions) of the videos of `df` a track signal can fire in: not
    those labeled without tracking (every track id null: each instance is an object of
    one frame), nor those with one labeled frame holding all their rows (an image: each
    signal needs two labeled frames). Told apart per video in one pass over the rows, so
    a table of many images costs no per-image pandas call."""
    codes, ids = pd.factorize(df["video_id"], sort=False)
    k = len(ids)
    frame = df["frame"].to_numpy(np.int64)
    tracked = np.ones(k, bool)
    if "track_id" in df:
        tracked = np.bincount(codes, weights=df["track_id"].notna().to_numpy(float), minlength=k) > 0
    lo = np.full(k, np.iinfo(np.int64).max)
    hi = np.full(k, np.iinfo(np.int64).min)
    np.minimum.at(lo, codes, frame)
    np.maximum.at(hi, codes, frame)
    todo = []
    for c in np.flatnonzero(tracked):
        vid = ids[c]
        labeled = frames.get(vid) if frames else None
        if lo[c] == hi[c] and (labeled is None or (len(labeled) and (np.asarray(labeled) == lo[c]).all())):
            continue  # one labeled frame holding every row (an image)
        todo.append(c)
    if not todo:
        return []
    positions = np.split(np.argsort(codes, kind="stable"), np.cumsum(np.bincount(codes, minlength=k))[:-1])
    return [(ids[c], positions[c]) for c in todo]


def frame_classes(df: pd.DataFrame) -> pd.Series:
    """The class the model gave on each row's frame."""
    return df["frame_class_name"] if "frame_class_name" in df else df["class_name"]


def object_classes(df: pd.DataFrame) -> pd.Series:
    """Each row's object class: `class_name` when the table has one class per object
    (it has `frame_class_name`), else the object's most frequent class."""
    if "frame_class_name" in df:
        return df["class_name"]
    mode = df.groupby(["video_id", "object_id"])["class_name"].agg(lambda s: s.value_counts().index[0])
    return pd.Series(mode.reindex(pd.MultiIndex.from_frame(df[["video_id", "object_id"]])).to_numpy(), index=df.index)


def _overlap_signal(df: pd.DataFrame, iou_threshold: float, boxes: np.ndarray,
                    pairs: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Each row's largest polygon IoU with a higher-scored instance of its frame (with a
    lower-scored one: HIGHER_SHARE of it), scaled so that 0.25x the NMS threshold is 0 and
    the threshold itself is 1. `boxes` (N, 4) x0, y0, x1, y1; `pairs` the frames' pairs."""
    iou = np.zeros(len(df))
    a, c, v = pair_iou(df["geometry"].to_numpy(), boxes, *pairs)
    scores = df["confidence"].to_numpy(float)
    weaker = scores[a] <= scores[c]  # NMS would delete the lower-scored of the two: that one it barely kept
    np.maximum.at(iou, a, np.where(weaker, v, HIGHER_SHARE * v))
    np.maximum.at(iou, c, np.where(weaker, HIGHER_SHARE * v, v))
    lo = 0.25 * iou_threshold
    return np.clip((iou - lo) / max(iou_threshold - lo, 1e-6), 0, 1)


def _track_signals(rows: Rows, ii: np.ndarray, labeled: np.ndarray, open_ends: bool,
                   sig: dict[str, np.ndarray]) -> None:
    """jump, gap, edge, short and still signals of one video's rows (positions `ii`,
    ascending), into `sig`. `labeled`: the video's labeled frames, sorted unique."""
    first, last = 0, len(labeled) - 1
    frame = rows.frame[ii]
    at = np.minimum(np.searchsorted(labeled, frame), max(last, 0))
    pos = np.where(labeled[at] == frame, at, -1) if len(labeled) else np.full(len(ii), -1)
    obj = rows.objects[ii]
    order = np.lexsort((pos, obj))  # by object, then labeled frame, then position (stable)
    order = order[obj[order] >= 0]  # a null object_id is no object
    idx, pos, obj = ii[order], pos[order], obj[order]
    if not len(idx):
        return
    same = obj[1:] == obj[:-1]  # consecutive rows of one object
    step = np.diff(pos)
    a0, a1 = rows.area[idx[:-1]], rows.area[idx[1:]]
    rel = np.abs(a1 - a0) / np.maximum(np.maximum(a0, a1), 1e-9)
    shift = np.hypot(np.diff(rows.cx[idx]), np.diff(rows.cy[idx])) / np.sqrt(np.maximum(np.minimum(a0, a1), 1.0))
    jump = np.clip(np.maximum((rel - 0.25) / 0.35, (shift - 0.5) / 0.5), 0, 1) * (step == 1)
    np.maximum.at(sig["jump"], idx[1:][same], jump[same])
    broken = same & (step > 1)
    sig["gap"][idx[1:][broken]] = 1.0
    sig["gap"][idx[:-1][broken]] = 1.0
    starts = np.flatnonzero(np.concatenate([[True], ~same]))
    ends = np.concatenate([starts[1:], [len(idx)]]) - 1
    sig["edge"][idx[starts]] = np.maximum(sig["edge"][idx[starts]], pos[starts] > first)  # appears mid-video
    sig["edge"][idx[ends]] = np.maximum(sig["edge"][idx[ends]], pos[ends] < last)  # leaves mid-video
    count = ends - starts + 1
    cut = (pos[starts] == first) | (pos[ends] == last) if open_ends else np.zeros(len(starts), bool)
    short = (len(labeled) >= 2 * SHORT_TRACK) & (count < SHORT_TRACK) & ~cut  # may go on beyond the window: cut
    sig["short"][idx[np.repeat(short, count)]] = np.repeat(1.0 - count[short] / SHORT_TRACK, count[short])
    _still_signal(rows, idx, starts, count, sig)


def _still_signal(rows: Rows, idx: np.ndarray, starts: np.ndarray, count: np.ndarray,
                  sig: dict[str, np.ndarray]) -> None:
    """The still signal of one video's objects (rows `idx` grouped by object: each from
    `starts`, `count` rows), into `sig`. An object's drift is the diagonal of the span of
    its box centres / its size (sqrt(median area_px)) / the frames it spans; for objects
    of STILL_MIN_FRAMES+ frames, still = 1 - drift / STILL_DRIFT (at least 0), when the
    median drift of those objects is over STILL_MOVING."""
    frame = rows.frame.astype(float)
    members, drifts = [], []
    for s, m in zip(starts[count >= STILL_MIN_FRAMES].tolist(), count[count >= STILL_MIN_FRAMES].tolist()):
        sub = idx[s:s + m]
        members.append(sub)
        size = max(float(np.sqrt(np.median(rows.area[sub]))), 1.0)
        drifts.append(float(np.hypot(np.ptp(rows.cx[sub]), np.ptp(rows.cy[sub]))) / size
                      / max(float(np.ptp(frame[sub])), 1.0))
    if len(members) < STILL_MIN_OBJECTS or np.median(drifts) <= STILL_MOVING:
        return  # too few objects to say, or most do not move: nothing stands out as still
    for sub, drift in zip(members, drifts):
        sig["still"][sub] = max(0.0, 1.0 - drift / STILL_DRIFT)


def review_queue(df: pd.DataFrame, confidence: float = default_of("confidence"), iou_threshold: float = default_of("iou_threshold"),
                 frames: dict[str, np.ndarray] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(objects, frames) of whole videos, each sorted by `priority` (highest first), with `reasons`.

    objects: video_id, object_id, class_name, frames, first_frame, last_frame, priority
    (the sum of its instances' priorities: about how many of them need a look), reasons
    (str: the signals that raised it, strongest first).
    frames: video_id, frame, instances, priority, reasons.
    """
    rows = review_rows(df, confidence, iou_threshold, frames)
    p = rows["priority"].to_numpy(float)
    rank = np.empty(len(df), np.int64)
    rank[np.argsort(df["frame"].to_numpy(), kind="stable")] = np.arange(len(df))  # ties: first seen, first listed
    obj = _object_entries(df, rows, rank, confidence)
    frm = _frame_entries(df[["video_id", "frame"]].assign(_p=p), frames)
    return (obj.sort_values("priority", ascending=False, kind="stable").reset_index(drop=True),
            frm.sort_values("priority", ascending=False, kind="stable").reset_index(drop=True))


def _frame_entries(d: pd.DataFrame, frames: dict[str, np.ndarray] | None) -> pd.DataFrame:
    """Each labeled frame's queue entry (video_id, frame, instances, priority, reasons), per
    video in order of first appearance in `d`, frames ascending: a frame's priority is its
    worst instance's (`_p`), raised where the object count changes from the frame before.
    `frames`: each video's labeled frames (default: those of its rows). Counted for every
    video at once in numpy (a table of many images has a video per image)."""
    columns = ["video_id", "frame", "instances", "priority", "reasons"]
    if not len(d):
        return pd.DataFrame([], columns=columns)
    codes, ids = pd.factorize(d["video_id"], sort=False)
    frame, p = d["frame"].to_numpy(np.int64), d["_p"].to_numpy(float)
    order = np.lexsort((frame, codes))
    c, f = codes[order], frame[order]
    starts = np.flatnonzero(np.concatenate([[True], (c[1:] != c[:-1]) | (f[1:] != f[:-1])]))
    seen_c, seen_f = c[starts], f[starts]  # each (video, frame) with rows, sorted
    seen_n = np.diff(np.concatenate([starts, [len(c)]]))
    seen_p = np.maximum.reduceat(p[order], starts)
    own = np.bincount(seen_c, minlength=len(ids))
    mine = np.split(seen_f, np.cumsum(own)[:-1])
    labeled = [np.asarray(np.unique(frames[vid]), np.int64) if frames and vid in frames else m for vid, m in zip(ids, mine)]
    video = np.repeat(np.arange(len(ids)), [len(x) for x in labeled])
    index_f = np.concatenate(labeled)
    if not len(index_f):
        return pd.DataFrame([], columns=columns)
    lo = min(int(index_f.min()), int(seen_f.min()))
    span = max(int(index_f.max()), int(seen_f.max())) - lo + 1
    seen_key, key = seen_c * span + (seen_f - lo), video * span + (index_f - lo)  # (video, frame) as one sorted int
    at = np.minimum(np.searchsorted(seen_key, key), len(seen_key) - 1)
    hit = seen_key[at] == key
    counts = np.where(hit, seen_n[at], 0)
    worst = np.where(hit, seen_p[at], 0.0)
    first = np.concatenate([[True], video[1:] != video[:-1]])
    previous = np.concatenate([counts[:1], counts[:-1]])
    changed = (counts != previous) & ~first
    priority = 1 - (1 - worst) * (1 - 0.3 * changed)
    entries = []
    for vid, fr, n, before, w, ch, pr in zip(ids[video].tolist(), index_f.tolist(), counts.tolist(), previous.tolist(),
                                             worst.tolist(), changed.tolist(), priority.tolist()):
        reasons = [f"object count {before} -> {n}"] if ch else []
        if w > 0.3:
            reasons.append(f"an instance at priority {w:.2f}")
        entries.append((vid, fr, n, pr, "; ".join(reasons)))
    return pd.DataFrame(entries, columns=columns)


def _object_entries(df: pd.DataFrame, rows: pd.DataFrame, rank: np.ndarray, confidence: float) -> pd.DataFrame:
    """Each object's queue entry, listed in order of `rank` ((N,) int: each row's listing
    rank; an object comes where its first-ranked row does), from its rows in frame order:
    its priority is the sum of its instances' (`rows`: `review_rows`; about how many of
    them need a look), its reasons the signals in order of what they add to it. Aggregated
    per object in one pass (a video labeled without tracking has an object per instance)."""
    video = pd.factorize(df["video_id"], sort=False)[0]
    objects = pd.factorize(df["object_id"], sort=False)[0]
    order = np.lexsort((df["frame"].to_numpy(), objects, video))  # per object, by frame, stable
    order = order[(video[order] >= 0) & (objects[order] >= 0)]  # a null key is no object
    v, o = video[order], objects[order]
    new = np.concatenate([[True], (v[1:] != v[:-1]) | (o[1:] != o[:-1])])[:len(order)]
    starts = np.flatnonzero(new)
    fc = frame_classes(df).to_numpy()[order]
    flips = np.add.reduceat(np.concatenate([[False], ~new[1:] & (fc[1:] != fc[:-1])]), starts) if len(order) else []
    # Sums as pandas makes them (compensated, in row order): a priority is the same to the bit as before.
    sums = pd.DataFrame({"priority": rows["priority"].to_numpy(float)[order], **{s: rows[s].to_numpy()[order] for s in SIGNALS},
                         "_object": np.cumsum(new)}).groupby("_object", sort=False).sum()
    fired = {s: np.add.reduceat(rows[s].to_numpy()[order] > 0, starts).tolist() if len(order) else [] for s in SIGNALS}
    low = np.minimum.reduceat(df["confidence"].to_numpy()[order], starts) if len(order) else []
    listed = np.argsort(np.minimum.reduceat(rank[order], starts)) if len(order) else np.zeros(0, np.int64)
    count = np.diff(np.concatenate([starts, [len(order)]]))
    added = np.stack([WEIGHTS[s] * sums[s].to_numpy(float) for s in SIGNALS], axis=1)
    gaps = sums["gap"].to_numpy()
    some = (added > 0.05).any(axis=1)  # objects with a reason
    reasons = [_reasons(added[g], confidence, count[g], flips[g], low[g], gaps[g], {s: fired[s][g] for s in SIGNALS})
               if some[g] else "" for g in listed.tolist()]
    first, last = order[starts][listed], order[starts + count - 1][listed]
    frame = df["frame"].to_numpy()
    return pd.DataFrame({
        "video_id": df["video_id"].iloc[first].reset_index(drop=True),
        "object_id": df["object_id"].iloc[first].reset_index(drop=True),
        "class_name": df["class_name"].iloc[first].reset_index(drop=True).astype(str),
        "frames": count[listed].astype(int), "first_frame": frame[first].astype(int), "last_frame": frame[last].astype(int),
        "priority": sums["priority"].to_numpy(float)[listed], "reasons": reasons,
    })


def _reasons(add: np.ndarray, confidence: float, frames: int, flips: int, low: float, gaps: float, fired: dict) -> str:
    """An object's reasons: the signals adding over 0.05 to its priority (`add`, per
    SIGNALS), the strongest first; `fired` counts its rows where each signal is > 0."""
    text = {
        "class": lambda: f"class flips {int(flips)}x (another class on {int(fired['class'])} frame{'' if fired['class'] == 1 else 's'})",
        "score": lambda: f"score {low:.2f} {'near' if low >= confidence else 'below'} threshold",
        "overlap": lambda: f"overlaps another instance almost as much as NMS allows ({int(fired['overlap'])} frames)",
        "jump": lambda: f"area/box jumps {int(fired['jump'])}x",
        "gap": lambda: f"track broken {int(gaps // 2)}x",
        "edge": lambda: "enters or leaves mid-video",
        "short": lambda: f"short track ({int(frames)} frames)",
        "still": lambda: f"stays still while others move ({int(fired['still'])} frames)",
        "nested": lambda: f"inside a larger instance's box ({int(fired['nested'])} frames)",
    }
    order = sorted(range(len(SIGNALS)), key=lambda k: -add[k])
    return "; ".join(text[SIGNALS[k]]() for k in order if add[k] > 0.05)


def run_thresholds(out_dir: str | Path) -> tuple[float, float]:
    """(confidence, iou_threshold) the labels of `out_dir` were made with (from its run
    manifest; the settings' defaults if unknown)."""
    from segflow.storage.layout import Layout
    from segflow.storage.manifest import read_manifest

    settings = (read_manifest(Layout(Path(out_dir).expanduser())).get("last_run") or {}).get("settings") or {}
    return (float(settings.get("confidence", default_of("confidence"))),
            float(settings.get("iou_threshold", default_of("iou_threshold"))))


def queue_of(out_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`review_queue` (objects, frames) of a local output folder's whole label table,
    against the thresholds its labels were made with, each row with its input's `source`
    (after video_id); SegflowError without a table."""
    from segflow.storage.exports.common import labeled_frames, read_table

    root = Path(out_dir).expanduser().resolve()
    df = read_table(root)  # by source, frame, object_id: each input's rows together, as `labeled_inputs` lists them
    objects, per_frame = review_queue(df, *run_thresholds(out_dir), frames=labeled_frames(root, df))
    sources = df.loc[~df["video_id"].duplicated(), ["video_id", "source"]].set_index("video_id")["source"]  # an image's id is its content hash: name it too
    for table in (objects, per_frame):
        table.insert(1, "source", table["video_id"].map(sources))
    return objects, per_frame
