"""COCO instance segmentation JSON -> imported inputs.

Images are grouped into inputs by segflow's extra keys when present (`video_id`,
`source`, `frame_index`, as `segflow export --format coco` writes them), else a file
with `frame_index` is a frame of the video `file_name`, else every image is an input of
its own. Polygons (one list per part) and RLEs (holes) are both read; an object keeps
its `object_id`, else it is named by its `track_id` (also CVAT's `attributes.track_id`),
else by the annotation id.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segflow.errors import SegflowError
from segflow.storage.imports.common import ImportedInput, polygon_of_rings, polygon_of_rle, source_and_id
from segflow.media import IMAGE_SUFFIXES


def read_coco(path: Path, doc: dict) -> list[ImportedInput]:
    """The inputs of one COCO document (`doc`, read from `path`)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) or not isinstance(doc.get("annotations"), list):
        raise SegflowError(f"{path}: not a COCO instances file (needs 'images', 'annotations', 'categories')")
    cats = {c["id"]: c for c in doc.get("categories", [])}
    inputs: dict[str, ImportedInput] = {}
    where: dict[int, tuple[ImportedInput, int]] = {}
    for im in doc["images"]:
        name = im.get("source") or im["file_name"]
        source, vid = source_and_id(name, path.parent, im.get("video_id"))
        kind = "image" if Path(source).suffix.lower() in IMAGE_SUFFIXES else "video"
        item = inputs.setdefault(vid, ImportedInput(source, vid, kind, int(im["width"]), int(im["height"])))
        frame = int(im.get("frame_index", 0))
        item.frames.add(frame)
        if im.get("timestamp_s") is not None:
            item.timestamps[frame] = float(im["timestamp_s"])
        where[im["id"]] = (item, frame)
    for ann in doc["annotations"]:
        if ann.get("image_id") not in where or ann.get("category_id") not in cats:
            raise SegflowError(f"{path}: annotation {ann.get('id')} names an unknown image or category")
        item, frame = where[ann["image_id"]]
        cat = cats[ann["category_id"]]
        track = ann.get("track_id", (ann.get("attributes") or {}).get("track_id"))
        oid = ann.get("object_id") or (f"{item.video_id[:8]}-t{int(track):05d}" if track is not None
                                       else f"{item.video_id[:8]}-a{ann['id']}")
        item.instances.append({
            "frame": frame, "object_id": oid, "track_id": None if track is None else int(track),
            "class_name": cat.get("class_name") or cat["name"], "feature_hash": cat.get("feature_hash"),
            "confidence": float(ann.get("score", 1.0)), "geometry": _geometry(ann["segmentation"], item, path),
        })
    return list(inputs.values())


def _geometry(segm, item: ImportedInput, path: Path):
    if isinstance(segm, dict):
        return polygon_of_rle(segm)
    if isinstance(segm, list):
        return polygon_of_rings([[np.asarray(p, float).reshape(-1, 2)] for p in segm if len(p) >= 6])
    raise SegflowError(f"{path}: a segmentation is neither polygons nor an RLE")
