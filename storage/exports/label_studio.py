"""Label Studio tasks JSON with predictions (import it into a project with the config below).

One task per image (a video's labeled frames are images named as in the COCO export,
`<video>/<frame:06d>.jpg`, written beside the export unless `--no-frames`), each with one prediction: `model_version` (the model id),
`score` (the mean instance confidence, so a reviewer can sort tasks by it) and a result
per region: `polygonlabels` for each part of a shape without holes (points in percent
of the image size, as Label Studio stores them), `brushlabels` in Label Studio's own RLE
for a shape with holes. Regions of one object share the id prefix `<object_id>`; each
carries its `score`. `data.review_priority` (the highest of the image's instances) is a
task field the data manager can sort by. `data.image` is `image_prefix` + the image's
name when a prefix (a URL, or Label Studio's `/data/local-files/?d=` root) is given,
else the image's path where the export writes it (a video frame's, and an image input's
link beside the export), or with `--no-frames` an image input's own path.

    <View><Image name="image" value="$image"/>
      <PolygonLabels name="label" toName="image">...</PolygonLabels>
      <BrushLabels name="brush" toName="image">...</BrushLabels></View>
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from segflow.ops.vote import one_class_per_object
from segflow.storage.exports.common import (
    Category, LabelSet, frame_file_name, frame_names, from_wkb, geometry_mask, has_holes, load_label_set, parts,
    resolve_categories, ring_xy,
)
from segflow.storage.layout import Layout
from segflow.storage.manifest import read_manifest

POLYGON_TAG, BRUSH_TAG, IMAGE_TAG = "label", "brush", "image"


def label_studio_tasks(labels: LabelSet, image_prefix: str | None = None, frames_root: Path | None = None,
                       images_written: bool = False) -> list[dict]:
    """The Label Studio tasks of a label set (see the module docstring); without a prefix,
    a video frame's image is its path under `frames_root` (where the export writes it), and
    an image input's is its link under `frames_root` when `images_written` (the export
    placed it there), else the input's own path."""
    stems = frame_names(labels.inputs)
    tasks = []
    for item in labels.inputs:
        by_frame = dict(tuple(item.rows.groupby("frame"))) if len(item.rows) else {}
        for frame in item.frames:
            name = frame_file_name(stems[item.video_id], item.kind, frame, labels.frame_ext)
            rows = by_frame.get(frame, item.rows.iloc[0:0])
            if image_prefix is not None:
                image = image_prefix + name
            elif frames_root and (item.kind != "image" or images_written):  # where the export writes it
                image = str(frames_root / name)
            else:
                image = item.source if item.kind == "image" else name
            data = {IMAGE_TAG: image, "source": item.source, "frame": int(frame), "video_id": item.video_id}
            if "review_priority" in rows and len(rows):
                data["review_priority"] = round(float(rows["review_priority"].max()), 6)
            result = [r for row in rows.itertuples(index=False) for r in _regions(row, labels, item.width, item.height)]
            score = float(rows["confidence"].mean()) if len(rows) else 0.0
            tasks.append({"data": data, "predictions": [
                {"model_version": ", ".join(labels.model_ids), "score": round(score, 6), "result": result}]})
    return tasks


def label_config(labels) -> str:
    """A Label Studio labeling config that these tasks fit (polygons and brushes, one label per category).

    `labels`: what `segflow.open(...)` or `segflow.label(...)` returns (local or s3://), a
    local output folder's path, or the export's own `LabelSet` (common.py); categories
    (names, colors) are the export's, so the config names every label the tasks use."""
    names = "".join(f'<Label value="{c.name}" background="{c.color}"/>' for c in _categories(labels))
    return (f'<View><Image name="{IMAGE_TAG}" value="${IMAGE_TAG}"/>'
            f'<PolygonLabels name="{POLYGON_TAG}" toName="{IMAGE_TAG}">{names}</PolygonLabels>'
            f'<BrushLabels name="{BRUSH_TAG}" toName="{IMAGE_TAG}">{names}</BrushLabels></View>')


def _categories(labels) -> tuple[Category, ...]:
    if isinstance(labels, LabelSet):
        return labels.categories
    if isinstance(labels, (str, os.PathLike)):
        return load_label_set(labels).categories
    # segflow.LabelSet (segflow/labelset.py): its table and the run manifest of its folder
    return tuple(resolve_categories(one_class_per_object(labels.table), read_manifest(Layout(labels.root))))


def _regions(row, labels: LabelSet, width: int, height: int) -> list[dict]:
    geom = from_wkb(row.geometry)
    name = labels.category_of(row.class_name).name
    common = {"to_name": IMAGE_TAG, "original_width": int(width), "original_height": int(height),
              "image_rotation": 0, "score": round(float(row.confidence), 6)}
    if has_holes(geom):
        rle = ls_rle(geometry_mask(geom, height, width))
        return [{"id": f"{row.object_id}", "from_name": BRUSH_TAG, "type": "brushlabels", **common,
                 "value": {"format": "rle", "rle": rle, "brushlabels": [name]}}]
    out = []
    for k, part in enumerate(parts(geom)):
        xy = ring_xy(part.exterior)
        if len(xy) < 3:
            continue
        points = np.round(xy / (width, height) * 100.0, 6).tolist()
        out.append({"id": f"{row.object_id}" + (f"_p{k}" if k else ""), "from_name": POLYGON_TAG,
                    "type": "polygonlabels", **common,
                    "value": {"points": points, "closed": True, "polygonlabels": [name]}})
    return out


def ls_rle(mask: np.ndarray) -> list[int]:
    """Label Studio's brush RLE of a bool (H, W) mask (as `label_studio_sdk.converter.brush.mask2rle`).

    The RGBA image (every channel 255 inside) flattened row-major, encoded as a bit
    stream: 32 bits of length, 5 bits of word size - 1 (7), four 4-bit run-size classes
    (3, 4, 8, 16 bits), then per run either `0 00 000 <8-bit value>` (one value) or
    `1 <2-bit class> <length - 1> <8-bit value>`, zero-padded to whole bytes.
    """
    flat = np.repeat(np.asarray(mask, bool).ravel(), 4)
    n = flat.size
    bits = [f"{n:032b}", f"{7:05b}", "".join(f"{s - 1:04b}" for s in (3, 4, 8, 16))]
    if n:
        starts = np.r_[0, np.flatnonzero(flat[1:] != flat[:-1]) + 1]
        lengths = np.diff(np.r_[starts, n])
        for start, length in zip(starts.tolist(), lengths.tolist()):
            value = "11111111" if flat[start] else "00000000"
            while length > 0:
                run = min(length, 2 ** 16)
                if run == 1:
                    bits.append("0" + "00" + "000" + value)
                elif run <= 8:
                    bits.append(f"100{run - 1:03b}{value}")
                elif run <= 16:
                    bits.append(f"101{run - 1:04b}{value}")
                elif run <= 256:
                    bits.append(f"110{run - 1:08b}{value}")
                else:
                    bits.append(f"111{run - 1:016b}{value}")
                length -= run
    stream = "".join(bits)
    stream += "0" * (8 - len(stream) % 8)
    return [int(stream[i:i + 8], 2) for i in range(0, len(stream), 8)]
