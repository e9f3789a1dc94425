"""YouTube-VIS JSON: videos, and one annotation per track with a per-frame RLE (or None).

Each input is a video whose frames are its labeled frames (an image is a one-frame
video); per-frame lists (`segmentations`, `areas`, `bboxes`) are aligned with the
video's `file_names`, None where the track is absent.
"""

from __future__ import annotations

import pandas as pd
from pycocotools import mask as mask_utils

from segflow.storage.exports.common import (
    LabeledInput, LabelSet, coco_categories, coco_info, frame_file_name, frame_names, from_wkb, geometry_rle, optional_int, xywh,
)


def ytvis_document(labels: LabelSet) -> dict:
    """The YouTube-VIS document of a label set."""
    stems = frame_names(labels.inputs)
    videos, annotations = [], []
    for item in labels.inputs:
        video_id = len(videos) + 1
        videos.append(
            {
                "id": video_id,
                "width": item.width,
                "height": item.height,
                "length": len(item.frames),
                "file_names": [frame_file_name(stems[item.video_id], item.kind, f, labels.frame_ext) for f in item.frames],
                "video_id": item.video_id,
                "source": item.source,
            }
        )
        for object_id, rows in item.rows.groupby("object_id", sort=True):
            annotations.append(track_annotation(len(annotations) + 1, video_id, item, object_id, rows, labels))
    return {
        "info": coco_info(labels),
        "licenses": [],
        "videos": videos,
        "annotations": annotations,
        "categories": coco_categories(labels),
    }


def track_annotation(ann_id: int, video_id: int, item: LabeledInput, object_id: str, rows: pd.DataFrame, labels: LabelSet) -> dict:
    """One track: per-frame RLE, area and [x, y, w, h] box aligned with the video's frames."""
    index = {f: i for i, f in enumerate(item.frames)}
    n = len(item.frames)
    segmentations: list[dict | None] = [None] * n
    areas: list[float | None] = [None] * n
    bboxes: list[list[float] | None] = [None] * n
    for row in rows.itertuples(index=False):
        i = index[int(row.frame)]
        rle = geometry_rle(from_wkb(row.geometry), item.height, item.width)
        segmentations[i] = rle
        areas[i] = float(mask_utils.area({"size": rle["size"], "counts": rle["counts"].encode("ascii")}))
        bboxes[i] = xywh(row)  # the geometry's tight box (the table's x0..y1)
    return {
        "id": ann_id,
        "video_id": video_id,
        "category_id": labels.category_of(str(rows["class_name"].iloc[0])).id,  # one per object (load_label_set)
        "iscrowd": 0,
        "height": item.height,
        "width": item.width,
        "length": 1,  # as in the YouTube-VIS files (a constant there)
        "segmentations": segmentations,
        "areas": areas,
        "bboxes": bboxes,
        "score": round(float(rows["confidence"].mean()), 6),
        "track_id": optional_int(rows["track_id"].iloc[0]),
        "object_id": object_id,
    }
