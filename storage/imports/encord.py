"""Encord label rows (JSON: one row or a list, as the SDK's `to_encord_dict` writes them) -> inputs.

Each object is one instance: its multi-part `polygons` (parts -> rings, outer first,
normalized) when present, else its `polygon` points. The object's `objectHash` is its
identity across frames: `object_id` is `<video_id[:8]>-<objectHash>` and `track_id`
numbers the hashes in order of first appearance. Classes are the objects' `name`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segflow.errors import SegflowError
from segflow.storage.imports.common import ImportedInput, polygon_of_rings, source_and_id


def read_encord(path: Path, doc) -> list[ImportedInput]:
    """The inputs of Encord label rows (`doc`, read from `path`)."""
    rows = doc if isinstance(doc, list) else [doc]
    if not rows or not all(isinstance(r, dict) and isinstance(r.get("data_units"), dict) for r in rows):
        raise SegflowError(f"{path}: not Encord label rows (each needs 'data_units')")
    out = []
    for row in rows:
        for unit in row["data_units"].values():
            source, vid = source_and_id(unit.get("data_link") or unit.get("data_title") or row.get("data_title", ""),
                                        path.parent)
            video = row.get("data_type") == "video" or str(unit.get("data_type", "")).startswith("video")
            item = ImportedInput(source, vid, "video" if video else "image", int(unit["width"]), int(unit["height"]),
                                 fps=float(unit["data_fps"]) if video and unit.get("data_fps") else None)
            labels = unit.get("labels") or {}
            frames = {int(f): v for f, v in labels.items()} if video else {0: labels}
            tracks: dict[str, int] = {}
            for frame in sorted(frames):
                item.frames.add(frame)
                for obj in (frames[frame] or {}).get("objects", []):
                    h = obj["objectHash"]
                    tracks.setdefault(h, len(tracks) + 1)
                    item.instances.append({
                        "frame": frame, "object_id": f"{vid[:8]}-{h}", "track_id": tracks[h],
                        "class_name": obj.get("name") or obj.get("value"), "feature_hash": obj.get("featureHash"),
                        "confidence": float(obj.get("confidence", 1.0)),
                        "geometry": _geometry(obj, item.width, item.height, path),
                    })
            out.append(item)
    return out


def _geometry(obj: dict, width: int, height: int, path: Path):
    scale = np.array([width, height], float)
    if obj.get("polygons"):
        parts = [[np.asarray(r, float).reshape(-1, 2) * scale for r in part] for part in obj["polygons"]]
    elif isinstance(obj.get("polygon"), dict):
        pts = [obj["polygon"][k] for k in sorted(obj["polygon"], key=int)]
        parts = [[np.array([[p["x"], p["y"]] for p in pts], float) * scale]]
    else:
        raise SegflowError(f"{path}: object {obj.get('objectHash')} is not a polygon (shape {obj.get('shape')!r})")
    return polygon_of_rings(parts)
