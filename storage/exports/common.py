"""What every export needs: the label table grouped by input, its categories, and geometry helpers.

Coordinates in the table are pixel coordinates where pixel (r, c) is the unit square
[c, c+1] x [r, r+1]; COCO polygons and RLEs use the same convention, Encord wants them
divided by the frame size.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import shapely
from pycocotools import mask as mask_utils
from shapely.geometry import MultiPolygon, Polygon

from segflow.errors import SegflowError
from segflow.ontology import PALETTE, Ontology, default_ontology, load_ontology, parse_ontology
from segflow.ops.raster import rasterize, rasterize_window
from segflow.storage.layout import Layout
from segflow.storage.manifest import read_manifest
from segflow.ops.vote import one_class_per_object
from segflow.storage.table import labeled_inputs_of, labels_meta
from segflow.media import IMAGE_SUFFIXES


@dataclass(frozen=True)
class Category:
    """One ontology object as an export category (ids are 1-based, in ontology order)."""

    id: int
    class_name: str
    name: str
    feature_hash: str
    color: str


@dataclass(frozen=True)
class LabeledInput:
    """One input of an output folder: its labeled frames and its rows of the label table."""

    source: str
    video_id: str
    kind: str  # "video" or "image"
    width: int
    height: int
    frames: tuple[int, ...]  # every labeled frame, with or without instances
    fps: float | None
    rows: pd.DataFrame  # this input's rows, sorted by frame then object_id

    @property
    def title(self) -> str:
        return Path(self.source).name


@dataclass(frozen=True)
class LabelSet:
    """An output folder read for export."""

    root: Path
    inputs: tuple[LabeledInput, ...]
    categories: tuple[Category, ...]
    created_at: datetime  # when the labels were made (manifest), so exports are reproducible
    model_ids: tuple[str, ...]
    frame_ext: str = "jpg"  # the image format of the video frames an export names

    def category_of(self, class_name: str) -> Category:
        for c in self.categories:
            if c.class_name == class_name:
                return c
        raise KeyError(class_name)


# ---- reading ---------------------------------------------------------------------------


def label_files(out_dir: str | Path) -> list[Path]:
    """The label table's Parquet files in an output folder (hidden cache excluded)."""
    root = Path(out_dir)
    return sorted(p for p in root.glob("*/*.parquet") if not p.parent.name.startswith("."))


def read_table(out_dir: str | Path, what: str = "LABELS") -> pd.DataFrame:
    """The whole label table of `out_dir`, or one clear SegflowError (naming the argument
    `what`) when there is none."""
    root = Path(out_dir).expanduser()
    if not root.is_dir():
        raise SegflowError(f"{what} {out_dir}: no such folder")
    if not label_files(root):
        inner = sorted(p.parent.parent for p in root.glob("*/*/*.parquet") if not p.parent.name.startswith("."))
        hint = (f"the label table is in {inner[0]}" if inner  # e.g. `segflow demo`'s folder: demo-out/labels
                else f"run `segflow label ... --out {out_dir}` first")
        raise SegflowError(f"{what} {out_dir}: no label table here ({hint})")
    try:
        df = pd.read_parquet(root)
    except Exception as exc:  # pyarrow raises several unrelated types for a damaged file
        raise SegflowError(f"{what} {out_dir}: label table is unreadable ({str(exc).splitlines()[0][:200]})") from None
    return df.sort_values(["source", "frame", "object_id"], kind="stable").reset_index(drop=True)


def load_label_set(out_dir: str | Path) -> LabelSet:
    """Read an output folder: table, labeled frames per input, categories and run time."""
    root = Path(out_dir).expanduser().resolve()
    df = one_class_per_object(read_table(root))
    manifest = read_manifest(Layout(root))
    inputs = tuple(_inputs(root, df, manifest))
    return LabelSet(
        root=root,
        inputs=inputs,
        categories=tuple(resolve_categories(df, manifest)),
        created_at=_created_at(manifest, root),
        model_ids=tuple(sorted(df["model_id"].unique())),
    )


def labeled_inputs(out_dir: str | Path, what: str = "LABELS") -> tuple[LabeledInput, ...]:
    """The inputs of an output folder with their labeled frames and rows (no ontology lookup);
    `what` names the argument in a refusal (read_table)."""
    root = Path(out_dir).expanduser().resolve()
    return tuple(_inputs(root, read_table(root, what), read_manifest(Layout(root))))


def labeled_frames(root: Path, df: pd.DataFrame) -> dict[str, np.ndarray]:
    """video_id -> its labeled frames (sorted, unique int64): the frames the label files'
    footers say were labeled (with or without instances) and those of its rows in `df`,
    as `labeled_inputs` gives each input's `frames`, without an entry per input built one
    by one (an image dataset has one input per image)."""
    vids, starts, ends = [], [], []
    for path in label_files(root):
        for vid, _, start, end in labeled_inputs_of(labels_meta(path) or {}, path.parent.name):
            vids.append(vid)
            starts.append(start)
            ends.append(end)
    lengths = np.maximum(np.asarray(ends, np.int64) - np.asarray(starts, np.int64) + 1, 0)
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    frames = np.repeat(np.asarray(starts, np.int64), lengths) + np.arange(int(lengths.sum()), dtype=np.int64) - offsets
    pairs = pd.DataFrame({
        "video_id": np.concatenate([np.repeat(np.asarray(vids, object), lengths), df["video_id"].to_numpy(object)]),
        "frame": np.concatenate([frames, df["frame"].to_numpy(np.int64)]),
    }).drop_duplicates().sort_values(["video_id", "frame"], kind="stable")
    ids, first = np.unique(pairs["video_id"].to_numpy(object), return_index=True)
    return dict(zip(ids.tolist(), np.split(pairs["frame"].to_numpy(np.int64), first[1:])))


def _inputs(root: Path, df: pd.DataFrame, manifest: dict) -> list[LabeledInput]:
    # Frame ranges come from the label files' footers, so frames without any instance
    # still count as labeled (COCO evaluation needs those negatives).
    ranges: dict[str, list[tuple[int, int, str]]] = {}
    for path in label_files(root):
        for vid, source, start, end in labeled_inputs_of(labels_meta(path) or {}, path.parent.name):
            ranges.setdefault(vid, []).append((start, end, source))
    by_video = {vid: rows for vid, rows in df.groupby("video_id", sort=False)}
    out = []
    for vid in sorted(set(ranges) | set(by_video), key=lambda v: _source_of(v, ranges, by_video)):
        rows = by_video.get(vid, df.iloc[0:0])
        source = _source_of(vid, ranges, by_video)
        frames = sorted({f for s, e, _ in ranges.get(vid, []) for f in range(s, e + 1)} | set(rows["frame"].tolist()))
        size = _frame_size(rows, source)
        if size is None:
            continue  # no instances and the source is gone: nothing to say about this input
        kind = manifest.get("inputs", {}).get(source, {}).get("kind") or _kind_of(source)
        out.append(
            LabeledInput(
                source=source, video_id=vid, kind=kind, width=size[0], height=size[1],
                frames=tuple(frames), fps=_fps(rows) if kind == "video" else None,
                rows=rows.sort_values(["frame", "object_id"], kind="stable").reset_index(drop=True),
            )
        )
    return out


def _source_of(vid: str, ranges: dict, by_video: dict) -> str:
    if vid in by_video and len(by_video[vid]):
        return str(by_video[vid]["source"].iloc[0])
    return next((s for _, _, s in ranges.get(vid, []) if s), vid)


def _kind_of(source: str) -> str:
    return "image" if Path(source).suffix.lower() in IMAGE_SUFFIXES else "video"


def _frame_size(rows: pd.DataFrame, source: str) -> tuple[int, int] | None:
    if len(rows):
        return int(rows["width"].iloc[0]), int(rows["height"].iloc[0])
    if not Path(source).is_file():
        return None
    from segflow.media import probe  # local: probing a video imports decord

    try:
        info = probe(source)
    except SegflowError:
        return None
    return info.width, info.height


def _fps(rows: pd.DataFrame) -> float | None:
    """Frame rate from the presentation times of the labeled frames (None if unknowable)."""
    per_frame = rows.drop_duplicates("frame")[["frame", "timestamp_s"]].sort_values("frame")
    if len(per_frame) < 2:
        return None
    df = np.diff(per_frame["frame"].to_numpy())
    dt = np.diff(per_frame["timestamp_s"].to_numpy())
    ok = dt > 0
    return round(float(np.median(df[ok] / dt[ok])), 3) if ok.any() else None


def _created_at(manifest: dict, root: Path) -> datetime:
    stamp = manifest.get("last_run", {}).get("finished_at")
    if stamp:
        try:
            return datetime.fromisoformat(stamp).astimezone(timezone.utc)
        except ValueError:
            pass
    newest = max((p.stat().st_mtime for p in label_files(root)), default=0.0)
    return datetime.fromtimestamp(newest, timezone.utc)


# ---- categories ------------------------------------------------------------------------


def resolve_categories(df: pd.DataFrame, manifest: dict) -> list[Category]:
    """The categories of a label table, from the ontology the run used when it can be known.

    Preference: an ontology recorded in the manifest; else the run's model and
    `--ontology` file re-resolved exactly as `label` did; else one category per
    (class_name, feature_hash) of the table. An ontology that disagrees with the
    table's feature hashes (the folder holds another run's labels) is not used.
    """
    in_table = dict(df[["class_name", "feature_hash"]].drop_duplicates().itertuples(index=False, name=None))
    ontology = _run_ontology(manifest)
    if ontology is not None and all(
        c in ontology.objects and ontology.objects[c].feature_hash == fh for c, fh in in_table.items()
    ):
        objects = list(ontology.objects.values())
        return [Category(i + 1, o.class_name, o.name, o.feature_hash, o.color) for i, o in enumerate(objects)]
    return [
        Category(i + 1, c, c, in_table[c], PALETTE[i % len(PALETTE)])
        for i, c in enumerate(sorted(in_table))
    ]


def _run_ontology(manifest: dict) -> Ontology | None:
    run = manifest.get("last_run") or {}
    recorded = run.get("ontology")
    if isinstance(recorded, dict) and isinstance(recorded.get("objects"), list):
        classes = tuple(str(o.get("class") or o.get("name")) for o in recorded["objects"] if isinstance(o, dict))
        try:
            return parse_ontology(recorded, classes, "manifest ontology")
        except SegflowError:
            return None
    settings = run.get("settings") or {}
    if not settings.get("model"):
        return None
    from segflow.models.registry import resolve_model  # local: imports torch

    try:
        model = resolve_model(str(settings["model"]))
        if settings.get("ontology"):
            return load_ontology(settings["ontology"], model.classes)
        if model.ontology:
            return parse_ontology(model.ontology, model.classes, "model ontology")
        return default_ontology(model.classes)
    except (SegflowError, OSError, ValueError, KeyError, TypeError):
        return None  # the model or ontology file moved: fall back to the table


# ---- geometry --------------------------------------------------------------------------


def parts(geom) -> list[Polygon]:
    """A (Multi)Polygon's non-empty parts, largest first (so part 0 is the 'main' outline)."""
    if geom is None or geom.is_empty:
        return []
    polys = list(geom.geoms) if isinstance(geom, MultiPolygon) else [geom]
    return sorted((p for p in polys if not p.is_empty), key=lambda p: -p.area)


def ring_xy(ring) -> np.ndarray:
    """A ring's vertices (N, 2) without the repeated closing vertex."""
    xy = np.asarray(ring.coords, dtype=np.float64)
    return xy[:-1] if len(xy) > 1 and np.array_equal(xy[0], xy[-1]) else xy


def has_holes(geom) -> bool:
    """Whether any part of the geometry has an interior ring."""
    return any(len(p.interiors) for p in parts(geom))


def from_wkb(blob: bytes):
    """The geometry of a table row."""
    return shapely.from_wkb(blob)


def geometry_rle(geom, height: int, width: int) -> dict:
    """A geometry as a COCO RLE (counts as str), holes cut out, drawn by the one
    rasterizer (`segflow.ops.raster`: a pixel is in when its centre is)."""
    rle = mask_utils.encode(np.asfortranarray(geometry_mask(geom, height, width).astype(np.uint8)))
    return {"size": [int(height), int(width)], "counts": rle["counts"].decode("ascii")}


def geometry_mask(geom, height: int, width: int) -> np.ndarray:
    """A geometry rasterized as a bool (height, width) mask (the same pixels as its RLE)."""
    return rasterize(geom, height, width)


def geometry_window(geom, height: int, width: int) -> tuple[int, int, np.ndarray] | None:
    """(row0, col0, mask) of a geometry in its bounding window clipped to the frame, or None."""
    return rasterize_window(geom, height, width)



def optional_int(value) -> int | None:
    """A nullable integer cell (NaN/None/NA when tracking was off) as int or None."""
    return None if value is None or pd.isna(value) else int(value)


def xywh(row) -> list[float]:
    """The row's box (the tight box of its geometry) as COCO [x, y, width, height]."""
    return [round(float(row.x0), 3), round(float(row.y0), 3),
            round(float(row.x1 - row.x0), 3), round(float(row.y1 - row.y0), 3)]


# ---- file names and writing ------------------------------------------------------------


def frame_names(inputs: tuple[LabeledInput, ...]) -> dict[str, str]:
    """video_id -> a file-name stem unique across the inputs (path relative to their common folder)."""
    parents = [str(Path(i.source).resolve().parent) for i in inputs]
    try:
        base = Path(os.path.commonpath(parents)) if parents else Path("/")
    except ValueError:  # mixed drives on Windows
        base = Path("/")
    out = {}
    for i in inputs:
        path = Path(i.source).resolve()
        try:
            rel = path.relative_to(base)
        except ValueError:
            rel = Path(path.name)
        out[i.video_id] = rel.as_posix() if i.kind == "image" else rel.with_suffix("").as_posix()
    return out


def frame_file_name(stem: str, kind: str, frame: int, ext: str = "jpg") -> str:
    """What a labeled frame is called in COCO/YouTube-VIS, relative to the export file's
    folder: the image itself, or <video>/<frame:06d>.<ext> (see exports/frames.py)."""
    return stem if kind == "image" else f"{stem}/{frame:06d}.{ext}"


def to_json_bytes(doc) -> bytes:
    """Compact, deterministic JSON (exports are diffable between runs)."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def coco_info(labels: "LabelSet") -> dict:
    """The `info` block shared by the COCO and YouTube-VIS exports."""
    return {
        "description": "segflow labels",
        "version": "1.0",
        "date_created": labels.created_at.isoformat(),
        "model_id": ", ".join(labels.model_ids),
    }


def coco_categories(labels: "LabelSet") -> list[dict]:
    """COCO-style categories from the ontology, with segflow's class and featureHash kept."""
    return [
        {"id": c.id, "name": c.name, "supercategory": "object", "class_name": c.class_name,
         "feature_hash": c.feature_hash, "color": c.color}
        for c in labels.categories
    ]
