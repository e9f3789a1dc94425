"""Encord label-row JSON: one label row per input, as Encord's SDK (LabelRowV2) writes them.

A video is one row with `data_units[<data_hash>].labels["<frame>"].objects[]`, one entry
per labeled frame (`objects: []` on a frame without instances, so an import gets the same
labeled frames); an image is one row whose data unit's `labels` holds `objects` directly.
Every object is a polygon with normalized (0..1) coordinates in two forms, as the SDK writes them:
`polygon`, the outer ring of the largest part as {"0": {"x", "y"}, ...}, and
`polygons`, every part as a list of rings (outer first, then holes), each ring a flat
[x0, y0, x1, y1, ...] list; `polygons[0][0]` is the same ring as `polygon`.
One `objectHash` per `object_id`, so a track keeps its hash on every frame.

With `review_priority`, each instance's `review_priority` is the answer, on its frame,
to a dynamic numeric attribute "Review priority" of its object (`object_actions`, as
the SDK writes dynamic answers); `encord_ontology` is the ontology that declares it.
Off by default: Encord refuses a row answering an attribute its project's ontology lacks.
"""

from __future__ import annotations

import hashlib
import mimetypes
import uuid
from datetime import datetime

import numpy as np

from segflow.storage.exports.common import Category, LabeledInput, LabelSet, from_wkb, parts, ring_xy

_NAMESPACE = uuid.UUID("6f1d3c1e-2b8a-4f4e-9a53-5e9f0c2d7a10")  # segflow's uuid5 namespace
CREATED_BY = "segflow"
DECIMALS = 6  # ~1/1000 px on a 4K frame


REVIEW_ATTRIBUTE = "Review priority"


def encord_label_rows(labels: LabelSet, review_priority: bool = False) -> list[dict]:
    """One Encord label row per labeled input (with the review priority attribute's answers)."""
    return [label_row(item, labels, review_priority) for item in labels.inputs]


def encord_ontology(labels: LabelSet) -> dict:
    """The Encord ontology structure of the exported objects (`OntologyStructure.from_dict`),
    each with the dynamic numeric attribute REVIEW_ATTRIBUTE."""
    return {"objects": [{"id": str(c.id), "name": c.name, "color": c.color, "shape": "polygon",
                         "featureNodeHash": c.feature_hash,
                         "attributes": [{"id": f"{c.id}.1", "name": REVIEW_ATTRIBUTE, "type": "numeric",
                                         "featureNodeHash": review_attribute_hash(c.feature_hash),
                                         "required": False, "dynamic": True}]}
                        for c in labels.categories],
            "classifications": []}


def review_attribute_hash(feature_hash: str) -> str:
    """The featureNodeHash of an object's review priority attribute (8 hex, stable)."""
    return hashlib.sha1(f"{feature_hash}:review_priority".encode()).hexdigest()[:8]


def label_row(item: LabeledInput, labels: LabelSet, review_priority: bool = False) -> dict:
    """The label row of one input (data_type "video" or "image")."""
    data_hash = str(uuid.uuid5(_NAMESPACE, f"data:{item.video_id}"))
    created = encord_time(labels.created_at)
    hashes = object_hashes(item.rows["object_id"].unique().tolist())
    by_frame: dict[int, list[dict]] = {}
    used: dict[str, None] = {}  # objectHashes in first-seen order
    actions: dict[str, list[dict]] = {}
    for row in item.rows.itertuples(index=False):
        category = labels.category_of(row.class_name)
        obj = encord_object(row, category, hashes[row.object_id], created, item.width, item.height)
        if obj is not None:
            by_frame.setdefault(int(row.frame), []).append(obj)
            used[obj["objectHash"]] = None
            if review_priority:
                actions.setdefault(obj["objectHash"], []).append(review_answer(row, category))
    if item.kind == "image":
        unit_labels: dict = {"objects": by_frame.get(0, []), "classifications": []}
    else:
        # Every labeled frame has an entry, `objects: []` where it has no instance (as the SDK
        # writes a frame it keeps with nothing on it), so an import gets the same labeled frames.
        frames = sorted(set(item.frames) | set(by_frame))
        unit_labels = {str(f): {"objects": by_frame.get(f, []), "classifications": []} for f in frames}
    unit = {
        "data_hash": data_hash,
        "data_title": item.title,
        "data_link": item.source,
        "data_type": mimetypes.guess_type(item.source)[0] or ("video/mp4" if item.kind == "video" else "image/jpeg"),
        "data_sequence": 0,
        "width": item.width,
        "height": item.height,
        "labels": unit_labels,
    }
    if item.kind == "video" and item.fps:
        unit["data_fps"] = item.fps
    return {
        "label_hash": str(uuid.uuid5(_NAMESPACE, f"label:{item.video_id}:{','.join(labels.model_ids)}")),
        "branch_name": "main",
        "created_at": created,
        "last_edited_at": created,
        "data_hash": data_hash,
        "dataset_hash": "",
        "dataset_title": "",
        "data_title": item.title,
        "data_type": item.kind,
        "is_shadow_data": False,
        "object_answers": {h: {"classifications": [], "objectHash": h} for h in used},
        "classification_answers": {},
        "object_actions": {h: {"objectHash": h, "actions": a} for h, a in actions.items()},
        "label_status": "LABELLED",
        "data_units": {data_hash: unit},
    }


def encord_object(row, category: Category, object_hash: str, created: str, width: int, height: int) -> dict | None:
    """One instance on one frame as an Encord polygon object (None for an empty geometry)."""
    polygons = normalized_polygons(from_wkb(row.geometry), width, height)
    if not polygons:
        return None
    outer = polygons[0][0]
    return {
        "name": category.name,
        "color": category.color,
        "shape": "polygon",
        "value": snake_case(category.name),
        "createdAt": created,
        "createdBy": CREATED_BY,
        "confidence": round(float(row.confidence), 6),
        "objectHash": object_hash,
        "featureHash": category.feature_hash,
        "manualAnnotation": False,
        "polygon": {str(i): {"x": outer[2 * i], "y": outer[2 * i + 1]} for i in range(len(outer) // 2)},
        "polygons": polygons,
    }


def review_answer(row, category: Category) -> dict:
    """An instance's review_priority as its object's dynamic attribute answer on its frame."""
    return {"name": REVIEW_ATTRIBUTE, "value": snake_case(REVIEW_ATTRIBUTE),
            "featureHash": review_attribute_hash(category.feature_hash),
            "answers": round(float(getattr(row, "review_priority", 0.0) or 0.0), 6), "manualAnnotation": False,
            "dynamic": True, "range": [[int(row.frame), int(row.frame)]], "shouldPropagate": False}


def normalized_polygons(geom, width: int, height: int) -> list[list[list[float]]]:
    """Parts (largest first) -> rings (outer, then holes) -> flat normalized [x0, y0, ...]."""
    scale = np.array([1.0 / width, 1.0 / height])
    out = []
    for part in parts(geom):
        rings = [part.exterior, *part.interiors]
        flat = [np.clip(ring_xy(r) * scale, 0.0, 1.0).round(DECIMALS).ravel().tolist() for r in rings]
        flat = [f for f in flat if len(f) >= 6]
        if flat and len(ring_xy(part.exterior)) >= 3:
            out.append(flat)
    return out


def object_hashes(object_ids: list[str]) -> dict[str, str]:
    """object_id -> an 8-character objectHash, deterministic and unique within the list.

    32 bits collide in big tracking-off videos, so a clash is resolved by rehashing
    with a counter, in sorted order (the same ids always get the same hashes).
    """
    out: dict[str, str] = {}
    taken: set[str] = set()
    for oid in sorted(set(object_ids)):
        salt = 0
        while (h := hashlib.sha1(f"{oid}#{salt}".encode() if salt else oid.encode()).hexdigest()[:8]) in taken:
            salt += 1
        taken.add(h)
        out[oid] = h
    return out


def snake_case(name: str) -> str:
    """Encord's `value`: the ontology name lower-cased with underscores for whitespace."""
    return "_".join(name.lower().split())


def encord_time(when: datetime) -> str:
    """Encord's long date format, e.g. 'Tue, 25 Nov 2026 19:22:16 UTC'."""
    return when.strftime("%a, %d %b %Y %H:%M:%S UTC")
