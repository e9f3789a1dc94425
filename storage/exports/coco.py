"""COCO instance segmentation JSON (loadable by pycocotools).

One image per labeled frame of each input (frames without instances included, so an
evaluation counts false positives there), named as exports/frames.py writes it. Each
annotation's category is its object's class (one per object_id, voted over the track),
its bbox and area those of its geometry (the segmentation). Parts without holes are COCO polygons; a
geometry with a hole cannot be a COCO polygon list (polygons are unioned), so it
becomes an RLE of exterior minus holes. `track_id`, `object_id` and `score` ride along
as extra keys, which pycocotools ignores.
"""

from __future__ import annotations

from segflow.storage.exports.common import (
    LabelSet, coco_categories, coco_info, frame_file_name, frame_names, from_wkb, geometry_rle, has_holes, optional_int, parts, ring_xy, xywh,
)


def coco_document(labels: LabelSet) -> dict:
    """The COCO document of a label set."""
    stems = frame_names(labels.inputs)
    images, annotations = [], []
    image_id: dict[tuple[str, int], int] = {}
    for item in labels.inputs:
        times = dict(zip(item.rows["frame"].tolist(), item.rows["timestamp_s"].tolist()))
        for frame in item.frames:
            image_id[(item.video_id, frame)] = len(images) + 1
            image = {
                "id": len(images) + 1,
                "file_name": frame_file_name(stems[item.video_id], item.kind, frame, labels.frame_ext),
                "width": item.width,
                "height": item.height,
                "frame_index": int(frame),
                "video_id": item.video_id,
                "source": item.source,
            }
            if frame in times:
                image["timestamp_s"] = round(float(times[frame]), 6)
            images.append(image)
        for row in item.rows.itertuples(index=False):
            geom = from_wkb(row.geometry)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id[(item.video_id, int(row.frame))],
                    "category_id": labels.category_of(row.class_name).id,
                    "segmentation": coco_segmentation(geom, item.height, item.width),
                    "area": round(float(row.area_px), 3),
                    "bbox": xywh(row),
                    "iscrowd": 0,
                    "score": round(float(row.confidence), 6),
                    "track_id": optional_int(row.track_id),
                    "object_id": row.object_id,
                    "review_priority": round(float(getattr(row, "review_priority", 0.0)), 6),
                    "attributes": {"track_id": optional_int(row.track_id), "keyframe": True},  # as CVAT reads them
                }
            )
    return {
        "info": coco_info(labels),
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": coco_categories(labels),
    }


def coco_segmentation(geom, height: int, width: int) -> list[list[float]] | dict:
    """COCO polygons (one flat [x0, y0, ...] list per part) or, if there are holes, an RLE."""
    if has_holes(geom):
        return geometry_rle(geom, height, width)
    # Fewer than 3 vertices would make pycocotools read the list as a box.
    return [[round(float(v), 3) for v in ring_xy(p.exterior).ravel()] for p in parts(geom) if len(p.exterior.coords) >= 4]
