"""CVAT for video 1.1 / CVAT for images 1.1 XML -> imported inputs.

Video: every `<track>` is an object (tracks sharing a non-zero `group_id` are one
object, their shapes on a frame unioned); shapes with `outside="1"` are not instances.
Only the frames CVAT lists as shapes are read (interpolated frames between keyframes
are not materialized). Images: every `<image>` is an input; shapes sharing a non-zero
`group_id` on an image are one object. Polygons and masks (CVAT's RLE over the shape's
box, row-major, starting with zeros) are read; the `object_id` and `score` attributes
(as `segflow export --format cvat` writes them) are kept when present.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import shapely

from segflow.errors import SegflowError
from segflow.storage.imports.common import ImportedInput, polygon_of_mask, polygon_of_rings, source_and_id

SHAPES = ("polygon", "mask")


def read_cvat(path: Path, root: ET.Element) -> list[ImportedInput]:
    """The inputs of a CVAT XML tree (`root`, read from `path`)."""
    if root.tag != "annotations":
        raise SegflowError(f"{path}: not a CVAT XML file (root element <{root.tag}>, expected <annotations>)")
    task = next((t for t in (root.find(f"meta/{k}") for k in ("task", "job", "project")) if t is not None),
                ET.Element("task"))
    if root.find("track") is not None or task.findtext("mode") == "interpolation":
        return [_video(path, root, task)]
    return [_image(path, el, k) for k, el in enumerate(root.iter("image"))]


def _video(path: Path, root: ET.Element, task: ET.Element) -> ImportedInput:
    w, h = task.findtext("original_size/width"), task.findtext("original_size/height")
    if not (w and h):
        raise SegflowError(f"{path}: a CVAT video file needs meta/task/original_size (width, height)")
    name = root.findtext("meta/source") or task.findtext("name") or path.stem
    source, vid = source_and_id(name, path.parent)
    item = ImportedInput(source, vid, "video", int(w), int(h))
    start, stop = int(task.findtext("start_frame") or 0), task.findtext("stop_frame")
    if stop is not None:
        item.frames.update(range(start, int(stop) + 1))
    merged: dict[tuple[str, int], dict] = {}
    for track in root.iter("track"):
        key = f"g{track.get('group_id')}" if track.get("group_id", "0") != "0" else f"t{track.get('id')}"
        for el in track:
            if el.tag not in SHAPES:
                continue
            frame = int(el.get("frame"))
            item.frames.add(frame)
            if el.get("outside") == "1":
                continue
            attrs = {a.get("name"): a.text or "" for a in el.findall("attribute")}
            inst = merged.setdefault((key, frame), {
                "frame": frame, "track_id": int(track.get("id")), "class_name": track.get("label"),
                "object_id": attrs.get("object_id") or f"{vid[:8]}-t{int(track.get('id')):05d}",
                "confidence": float(attrs.get("score") or 1.0), "geometry": None,
            })
            inst["geometry"] = _union(inst["geometry"], _shape(el, item, path))
    item.instances = list(merged.values())
    return item


def _image(path: Path, el: ET.Element, k: int) -> ImportedInput:
    source, vid = source_and_id(el.get("name"), path.parent)
    item = ImportedInput(source, vid, "image", int(el.get("width")), int(el.get("height")), frames={0})
    merged: dict[str, dict] = {}
    for n, shape in enumerate(e for e in el if e.tag in SHAPES):
        attrs = {a.get("name"): a.text or "" for a in shape.findall("attribute")}
        key = f"g{shape.get('group_id')}" if shape.get("group_id", "0") != "0" else f"s{n}"
        inst = merged.setdefault(key, {
            "frame": 0, "track_id": None, "class_name": shape.get("label"),
            "object_id": attrs.get("object_id") or f"{vid[:8]}-i{n:05d}",
            "confidence": float(attrs.get("score") or 1.0), "geometry": None,
        })
        inst["geometry"] = _union(inst["geometry"], _shape(shape, item, path))
    item.instances = list(merged.values())
    return item


def _shape(el: ET.Element, item: ImportedInput, path: Path):
    if el.tag == "polygon":
        pts = np.array([[float(v) for v in p.split(",")] for p in el.get("points").split(";") if p], float)
        return polygon_of_rings([[pts]])
    left, top, w, h = (int(float(el.get(k))) for k in ("left", "top", "width", "height"))
    crop = cvat_rle_decode(el.get("rle"), h, w, path)
    full = np.zeros((item.height, item.width), bool)
    full[top:top + h, left:left + w] = crop[: max(0, item.height - top), : max(0, item.width - left)]
    return polygon_of_mask(full)


def cvat_rle_decode(rle: str, height: int, width: int, path: Path) -> np.ndarray:
    """CVAT's mask RLE -> bool (height, width): alternating runs, zeros first, row-major."""
    runs = np.array([int(v) for v in rle.split(",") if v.strip()], np.int64)
    if runs.sum() != height * width:
        raise SegflowError(f"{path}: a mask's RLE covers {runs.sum()} pixels, its box {height}x{width}")
    values = np.arange(len(runs)) % 2 == 1
    return np.repeat(values, runs).reshape(height, width)


def _union(a, b):
    if a is None:
        return b
    return a if b is None else shapely.union(a, b)
