"""The label table (the product's Parquet contract) and the cached stage outputs."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from segflow.storage.atomic import write_parquet_atomic
from segflow.storage.fs import read_schema, read_table
from segflow.contracts import Detections, Polygons, Thumbnails

LABEL_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("video_id", pa.string()),
        ("frame", pa.int32()),
        ("timestamp_s", pa.float64()),
        ("object_id", pa.string()),
        ("track_id", pa.int64()),
        ("class_name", pa.string()),
        ("feature_hash", pa.string()),
        ("frame_class_name", pa.string()),
        ("confidence", pa.float32()),
        ("x0", pa.float32()),
        ("y0", pa.float32()),
        ("x1", pa.float32()),
        ("y1", pa.float32()),
        ("review_priority", pa.float32()),
        ("geometry", pa.binary()),
        ("vertex_count", pa.int32()),
        ("area_px", pa.float64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("model_id", pa.string()),
        ("params_hash", pa.string()),
    ]
)
_META_KEY = b"segflow"


def footer_entries(values: dict[bytes, dict | None]) -> dict[bytes, bytes]:
    """Parquet footer entries: each `meta` given as JSON under its key (None: left out)."""
    return {key: json.dumps(meta, sort_keys=True).encode() for key, meta in values.items() if meta is not None}


def footer_meta(path: Path, key: bytes) -> dict | None:
    """The JSON `meta` under `key` in a Parquet file's footer, or None (none stored, file
    missing, torn or unreadable: not finished)."""
    try:
        raw = (read_schema(path).metadata or {}).get(key)
        return json.loads(raw) if raw is not None else None
    except (OSError, ValueError, pa.ArrowException):
        return None


def write_labels(columns: dict, path: Path, meta: dict) -> Path:
    """Write one range of the label table atomically, with `meta` in the file footer
    (JSON under the key b"segflow": which frames the file covers, `start`..`end`
    inclusive, also those without any instance, and how it was made)."""
    table = pa.table(columns, schema=LABEL_SCHEMA)
    return write_parquet_atomic(table.replace_schema_metadata(footer_entries({_META_KEY: meta})), path)


def labels_meta(path: Path) -> dict | None:
    """The footer metadata of a label file, or None if missing or unreadable."""
    return footer_meta(path, _META_KEY)


LABEL_POLYGONS_KEY = "polygons"  # a shard's label file footer: it is its polygon cache (see `label_polygon_rows`)


def label_polygon_rows(path: Path, raw_index: list[int]) -> dict[int, tuple[bytes, int, float]]:
    """raw position -> (wkb, vertex_count, area) of a shard's label file serving as its
    polygon cache: row j's geometry, vertex count and area, `raw_index[j]` its raw position
    (from the file's footer, `LABEL_POLYGONS_KEY`); like `load_polygon_rows` of a cache file."""
    t = read_table(path, ["geometry", "vertex_count", "area_px"])
    if t.num_rows != len(raw_index):
        raise ValueError(f"{path}: {t.num_rows} rows, footer names {len(raw_index)}")
    return {
        int(r): (w, int(v), float(a))
        for r, w, v, a in zip(raw_index, t["geometry"].to_pylist(), t["vertex_count"].to_pylist(),
                              t["area_px"].to_pylist())
    }


def labeled_inputs_of(meta: dict, folder: str = "") -> list[tuple[str, str, int, int]]:
    """(video_id, source, start, end) of each input a label file covers, from its footer
    `meta`: a shard's every image (frame 0), or a video's range (its `video_id`, else the
    name of the file's `folder`)."""
    if "members" in meta:
        return [(str(vid), str(src), 0, 0) for vid, src in meta["members"]]
    if {"start", "end"} <= meta.keys():
        return [(str(meta.get("video_id") or folder), str(meta.get("source") or ""), int(meta["start"]),
                 int(meta["end"]))]
    return []


# ---- cached stage outputs ------------------------------------------------------------

_RAW_META_KEY = b"segflow_raw"


def save_detections(det: Detections, path: Path, frames_run: int, meta: dict | None = None) -> Path:
    table = pa.table(
        {
            "frame": pa.array(det.frame, pa.int64()),
            "timestamp": pa.array(det.timestamp, pa.float64()),
            "label": pa.array(det.label, pa.int64()),
            "score": pa.array(det.score, pa.float32()),
            "boxes": pa.FixedSizeListArray.from_arrays(pa.array(det.boxes.reshape(-1), pa.float32()), 4),
            "rle_counts": pa.array([r["counts"] for r in det.rles], pa.binary()),
            "rle_h": pa.array([r["size"][0] for r in det.rles], pa.int32()),
            "rle_w": pa.array([r["size"][1] for r in det.rles], pa.int32()),
            **({} if det.color is None else {  # the tracker's appearance cue (mean RGB under the mask)
                "color": pa.FixedSizeListArray.from_arrays(pa.array(det.color.reshape(-1), pa.float32()), 3)}),
        }
    )
    footer = {b"frames_run": str(frames_run).encode(), **footer_entries({_RAW_META_KEY: meta})}
    if det.thumbs is not None:  # one per frame run, for the track stage's shot cuts
        footer[_THUMBS_KEY] = json.dumps({"frame": det.thumbs.frame.tolist(), "shape": list(det.thumbs.hsv.shape),
                                          "hsv": base64.b64encode(det.thumbs.hsv.tobytes()).decode()}).encode()
    return write_parquet_atomic(table.replace_schema_metadata(footer), path, cache=True)


_THUMBS_KEY = b"segflow_thumbs"


def _thumbnails(t: pa.Table) -> Thumbnails | None:
    raw = (t.schema.metadata or {}).get(_THUMBS_KEY)
    if raw is None:
        return None
    d = json.loads(raw)
    return Thumbnails(np.asarray(d["frame"], np.int64),
                      np.frombuffer(base64.b64decode(d["hsv"]), np.uint8).reshape(d["shape"]))


def detections_meta(path: Path) -> dict | None:
    """The `meta` `save_detections` stored with raw detections, or None (none, unreadable)."""
    return footer_meta(path, _RAW_META_KEY)


def load_detections(path: Path) -> Detections:
    t = read_table(path)
    n = t.num_rows
    counts, hs, ws = t["rle_counts"].to_pylist(), t["rle_h"].to_pylist(), t["rle_w"].to_pylist()
    return Detections(
        frame=t["frame"].to_numpy(),
        timestamp=t["timestamp"].to_numpy(),
        label=t["label"].to_numpy(),
        score=t["score"].to_numpy(),
        boxes=np.asarray(t["boxes"].combine_chunks().flatten(), np.float32).reshape(n, 4),
        rles=[{"size": [h, w], "counts": c} for c, h, w in zip(counts, hs, ws)],
        color=(np.asarray(t["color"].combine_chunks().flatten(), np.float32).reshape(n, 3)
               if "color" in t.column_names else None),
        thumbs=_thumbnails(t),
    )


_TRACKER_META_KEY = b"segflow_tracker"
_INDEX_META_KEY = b"segflow_indices"


def save_indices(idx: np.ndarray, path: Path, tracker_state: dict | None = None, meta: dict | None = None) -> Path:
    """An int64 column; a range's track ids also carry the tracker's state after the
    range (JSON in the footer) for the next range to continue from, and kept indices
    a small `meta` (their counts), so a later run knows them without the raw output."""
    table = pa.table({"index": pa.array(idx, pa.int64())})
    footer = footer_entries({_INDEX_META_KEY: meta})
    if tracker_state is not None:
        footer[_TRACKER_META_KEY] = json.dumps(tracker_state).encode()
    if footer:
        table = table.replace_schema_metadata(footer)
    return write_parquet_atomic(table, path, cache=True)


def load_tracker_state(path: Path) -> dict | None:
    """The tracker state `save_indices` stored with a range's ids, or None."""
    raw = (read_schema(path).metadata or {}).get(_TRACKER_META_KEY)
    return json.loads(raw) if raw is not None else None


def indices_meta(path: Path) -> dict | None:
    """The `meta` `save_indices` stored with indices, or None (none stored, unreadable)."""
    return footer_meta(path, _INDEX_META_KEY)


def load_indices(path: Path) -> np.ndarray:
    return read_table(path)["index"].to_numpy()


_POLY_META_KEY = b"segflow_poly"


def save_polygons(polys: Polygons, path: Path, raw_index: np.ndarray | None = None, meta: dict | None = None) -> Path:
    """A range's polygons; optionally each row's position in the raw detections and a
    footer `meta` (what they were made from), so later runs can reuse them per instance."""
    columns = {
        "index": pa.array(polys.index, pa.int64()),
        "wkb": pa.array(polys.wkb, pa.binary()),
        "vertex_count": pa.array(polys.vertex_count, pa.int32()),
        "area": pa.array(polys.area, pa.float64()),
    }
    if raw_index is not None:
        columns["raw_index"] = pa.array(np.asarray(raw_index, np.int64), pa.int64())
    table = pa.table(columns)
    if meta is not None:
        table = table.replace_schema_metadata(footer_entries({_POLY_META_KEY: meta}))
    return write_parquet_atomic(table, path, cache=True)


def polygons_meta(path: Path) -> dict | None:
    """The footer `meta` of a polygon cache file, or None (older file, unreadable)."""
    return footer_meta(path, _POLY_META_KEY)


def load_polygon_rows(path: Path) -> dict[int, tuple[bytes, int, float]]:
    """raw position -> (wkb, vertex_count, area) of a polygon cache file saved with `raw_index`."""
    t = read_table(path)
    return {
        int(r): (w, int(v), float(a))
        for r, w, v, a in zip(t["raw_index"].to_pylist(), t["wkb"].to_pylist(), t["vertex_count"].to_pylist(),
                              t["area"].to_pylist())
    }


def load_polygons(path: Path) -> Polygons:
    t = read_table(path)
    return Polygons(
        index=t["index"].to_numpy(),
        wkb=t["wkb"].to_pylist(),
        vertex_count=t["vertex_count"].to_numpy(),
        area=t["area"].to_numpy(),
    )


def load_instances(raw: Path, kept: Path, polys: Path) -> tuple[Detections, Polygons]:
    """A range's polygonized instances: detections row-aligned with their polygons."""
    return instances_of(load_detections(raw), kept, polys)


def load_vote_inputs(
    raw: Path, kept: Path, polys: Path, track: Path
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(labels, scores, track ids, frames) of a range's persisted instances, row-aligned
    with `load_instances` and its track ids; only the small columns are read (no masks)."""
    t = read_table(raw, ["label", "score", "frame"])
    pick = load_indices(kept)[load_polygons_index(polys)]
    return (t["label"].to_numpy()[pick], t["score"].to_numpy()[pick], load_indices(track),
            t["frame"].to_numpy()[pick])


def load_polygons_index(path: Path) -> np.ndarray:
    """Which filtered instances a polygon cache file holds (its `index` column)."""
    return read_table(path, ["index"])["index"].to_numpy()


def instances_of(raw: Detections, kept: Path, polys: Path) -> tuple[Detections, Polygons]:
    """`load_instances` for a range whose raw detections are loaded already."""
    poly = load_polygons(polys)
    return raw.take(load_indices(kept)).take(poly.index), poly
