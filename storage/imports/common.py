"""What every import needs: reviewed instances -> segflow label table files.

A reader turns a file into `ImportedInput`s (one per video or image: its labeled frames
and its instances, geometry as shapely (Multi)Polygons in pixel coordinates where pixel
(r, c) is [c, c+1] x [r, r+1]); `write_table` writes them as an output folder of the
label table, `OUT/<video_id>/frames_<first>_<last>.parquet`, with the same columns as a
label run (boxes, areas and vertex counts recomputed from the geometry), so `segflow
train`, `export`, `review` and `compare` take it like any segflow output.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import shapely
from pycocotools import mask as mask_utils
from shapely.geometry import Polygon

from segflow.errors import SegflowError
from segflow.ops.outline import polygonal
from segflow.ontology import feature_hash
from segflow.review import review_rows
from segflow.storage.keys import content_id
from segflow.storage.table import write_labels
from segflow.contracts import FrameRange

IMPORT_MIN_AREA = 0.0  # reviewed labels keep every part and hole a person drew


@dataclass
class ImportedInput:
    """One video or image of an imported file."""

    source: str
    video_id: str
    kind: str  # "video" or "image"
    width: int
    height: int
    frames: set[int] = field(default_factory=set)  # labeled frames, with or without instances
    fps: float | None = None
    timestamps: dict[int, float] = field(default_factory=dict)  # frame -> seconds, where the file says
    instances: list[dict] = field(default_factory=list)  # frame, object_id, track_id, class_name, geometry, ...


def source_and_id(name: str, base: Path, video_id: str | None = None) -> tuple[str, str]:
    """(source, video_id) of an input named `name` in a file in `base`: a path relative
    to the file is resolved; the id is the file's content id when it is here (the same
    id a label run gives it), else `video_id` from the file, else a digest of the name."""
    path = Path(name)
    if not path.is_absolute() and "://" not in name and (base / path).exists():
        path = base / path
    if path.is_file():
        return str(path.resolve()), video_id or content_id(path)
    return name, video_id or hashlib.blake2b(name.encode(), digest_size=8).hexdigest()


def polygon_of_rings(parts: list[list[np.ndarray]]):
    """(Multi)Polygon of parts, each [outer ring (N, 2), hole rings...]; invalid ones mended."""
    polys = []
    for rings in parts:
        if len(rings[0]) < 3:
            continue
        poly = Polygon(rings[0], [r for r in rings[1:] if len(r) >= 3])
        polys.append(poly if poly.is_valid else shapely.make_valid(poly))
    if not polys:
        return None
    geom = shapely.union_all(polys) if len(polys) > 1 else polys[0]
    geom = polygonal(geom)
    return None if geom is None or geom.is_empty else geom


def polygon_of_mask(mask: np.ndarray):
    """A bool (H, W) mask -> its exact pixel outline as a (Multi)Polygon with holes, or None."""
    from segflow.ops.polygon import mask_to_polygon  # the pixel tracer a label run uses

    if not mask.any():
        return None
    return mask_to_polygon(np.ascontiguousarray(mask, dtype=bool), 0.0, IMPORT_MIN_AREA)


def polygon_of_rle(rle: dict):
    """A COCO RLE (counts str/bytes or uncompressed list) -> (Multi)Polygon, or None."""
    h, w = rle["size"]
    if isinstance(rle["counts"], list):
        rle = mask_utils.frPyObjects(rle, h, w)
    elif isinstance(rle["counts"], str):
        rle = {"size": [h, w], "counts": rle["counts"].encode("ascii")}
    return polygon_of_mask(mask_utils.decode(rle).astype(bool))


def write_table(inputs: list[ImportedInput], out: Path, model_id: str, params_hash: str) -> dict:
    """Write the inputs as a label table under `out` (one file per input); returns a summary."""
    summary = {"out": str(out), "model_id": model_id, "inputs": []}
    for item in inputs:
        df = _rows(item, model_id, params_hash)
        frames = sorted(item.frames | set(df["frame"].tolist()))
        if not frames:
            continue
        rng = FrameRange(frames[0], frames[-1])
        meta = {"params_hash": params_hash, "source": item.source, "start": rng.start, "end": rng.end,
                "frames": frames, "imported": model_id}
        write_labels({c: df[c].tolist() for c in df.columns}, out / item.video_id / f"{rng.name}.parquet", meta)
        summary["inputs"].append({"source": item.source, "video_id": item.video_id, "frames": len(frames),
                                  "instances": len(df), "objects": int(df["object_id"].nunique())})
    return summary


def _rows(item: ImportedInput, model_id: str, params_hash: str) -> pd.DataFrame:
    rows = []
    for inst in item.instances:
        geom = inst["geometry"]
        if geom is None or geom.is_empty:
            continue
        x0, y0, x1, y1 = geom.bounds
        frame = int(inst["frame"])
        cls = str(inst["class_name"])
        rows.append({
            "source": item.source, "video_id": item.video_id, "frame": frame,
            "timestamp_s": item.timestamps.get(frame, frame / item.fps if item.fps else (0.0 if item.kind == "image"
                                                                                         else float("nan"))),
            "object_id": str(inst["object_id"]), "track_id": inst.get("track_id"),
            "class_name": cls, "feature_hash": inst.get("feature_hash") or feature_hash(cls),
            "frame_class_name": cls,
            "confidence": float(inst.get("confidence", 1.0)),
            "x0": x0, "y0": y0, "x1": x1, "y1": y1,
            "geometry": shapely.to_wkb(geom), "vertex_count": _vertex_count(geom),
            "area_px": float(geom.area), "width": item.width, "height": item.height,
            "model_id": model_id, "params_hash": params_hash,
        })
    df = pd.DataFrame(rows, columns=["source", "video_id", "frame", "timestamp_s", "object_id", "track_id",
                                     "class_name", "feature_hash", "frame_class_name", "confidence", "x0", "y0", "x1", "y1",
                                     "geometry", "vertex_count", "area_px", "width", "height", "model_id",
                                     "params_hash"])
    df = df.sort_values(["frame", "object_id"], kind="stable").reset_index(drop=True)
    if df["track_id"].isna().any():
        df["track_id"] = None
    else:
        df["track_id"] = df["track_id"].astype("int64")
    df["review_priority"] = review_rows(df, frames={item.video_id: np.array(sorted(item.frames))})["priority"]
    return df


def _vertex_count(geom) -> int:
    """Distinct vertices (rings without their closing repeat), as a label run counts them."""
    return int(sum(len(r.coords) - 1 for p in getattr(geom, "geoms", [geom]) for r in [p.exterior, *p.interiors]))


def unique(seq, what: str, where: str):
    """The one value of `seq`, or a SegflowError naming `what`."""
    values = set(seq)
    if len(values) != 1:
        raise SegflowError(f"{where}: expected one {what}, found {len(values)}")
    return values.pop()
