"""CVAT XML: "CVAT for video 1.1" per video, "CVAT for images 1.1" for the images of a label set.

A video is one task (`mode` interpolation) with one `<track>` per object: every frame
the object is labeled on is a keyframe; where it leaves (absent on the next labeled
frame), a copy of its last shape with `outside="1"` ends that stretch, so CVAT does not
interpolate it through frames where it is not. A track has one shape type: objects
whose shape is one polygon without holes on every frame are `<polygon>` tracks; an
object that has holes or several parts on any frame is a `<mask>` track (CVAT's RLE),
so no part and no hole is lost. Images (`mode` annotation) hold a `<polygon>` per part
(parts of one object share a `group_id`) or a `<mask>` for a shape with holes.

Every shape carries the attributes `object_id`, `score` and `review_priority` (declared
on each label), and tracks are numbered by `track_id` (else in object order). CVAT's mask
RLE: run lengths over the shape's box [left, top, left+width-1, top+height-1] in row-major
order, starting with a run of zeros; pixel (r, c) is the square [c, c+1] x [r, r+1].
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np

from segflow.storage.exports.common import (
    LabeledInput, LabelSet, frame_names, from_wkb, geometry_window, has_holes, parts, ring_xy,
)

VERSION = "1.1"
ATTRIBUTES = (("object_id", "text", ""), ("score", "number", "0;1;0.000001"), ("review_priority", "number", "0;1;0.000001"))


def cvat_documents(labels: LabelSet) -> dict[str, bytes]:
    """File name -> XML bytes: `<video stem>.xml` per video, `images.xml` for the images (if any)."""
    out: dict[str, bytes] = {}
    videos = [i for i in labels.inputs if i.kind == "video"]
    images = [i for i in labels.inputs if i.kind != "video"]
    names: set[str] = set()
    for item in videos:
        stem, k = item.title.rsplit(".", 1)[0] or item.video_id, 1
        name = f"{stem}.xml"
        while name in names or name == "images.xml":
            k += 1
            name = f"{stem}-{k}.xml"
        names.add(name)
        out[name] = _bytes(video_document(item, labels))
    if images:
        out["images.xml"] = _bytes(images_document(images, labels))
    return out


def video_document(item: LabeledInput, labels: LabelSet) -> ET.Element:
    """The CVAT for video 1.1 tree of one labeled video."""
    last = max(item.frames) if item.frames else 0
    root = _root(labels, item.title, "interpolation", last + 1, item)
    labeled = list(item.frames)
    follows = {f: labeled[k + 1] for k, f in enumerate(labeled[:-1])}  # next labeled frame
    rows = item.rows.sort_values(["object_id", "frame"], kind="stable")
    for k, (oid, g) in enumerate(rows.groupby("object_id", sort=False)):
        tid = int(g["track_id"].iloc[0]) if "track_id" in g and g["track_id"].notna().all() else k
        track = ET.SubElement(root, "track", id=str(tid), label=_label(labels, g["class_name"].iloc[0]),
                              source="auto", group_id="0")
        geoms = [from_wkb(w) for w in g["geometry"]]
        as_mask = any(len(parts(gm)) != 1 or has_holes(gm) for gm in geoms)
        frames = g["frame"].astype(int).tolist()
        present = set(frames)
        for row, geom in zip(g.itertuples(index=False), geoms):
            shape = _shape(track, geom, as_mask, item, {"frame": str(int(row.frame)), "keyframe": "1", "outside": "0"})
            if shape is not None:
                _attributes(shape, row)
            nxt = follows.get(int(row.frame))
            if nxt is not None and nxt not in present and shape is not None:  # leaves: an outside keyframe
                end = _shape(track, geom, as_mask, item, {"frame": str(nxt), "keyframe": "1", "outside": "1"})
                _attributes(end, row)
    return root


def images_document(images: list[LabeledInput], labels: LabelSet) -> ET.Element:
    """The CVAT for images 1.1 tree of the image inputs of a label set."""
    root = _root(labels, "segflow images", "annotation", len(images), images[0] if images else None)
    names = frame_names(labels.inputs)
    group = 0
    for k, item in enumerate(images):
        image = ET.SubElement(root, "image", id=str(k), name=names[item.video_id], width=str(item.width), height=str(item.height))
        for row in item.rows.itertuples(index=False):
            geom = from_wkb(row.geometry)
            label = _label(labels, row.class_name)
            ps = parts(geom)
            if has_holes(geom):
                shapes = [_shape(image, geom, True, item, {"label": label, "group_id": "0"})]
            else:
                gid = "0"
                if len(ps) > 1:
                    group += 1
                    gid = str(group)
                shapes = [_shape(image, p, False, item, {"label": label, "group_id": gid}) for p in ps]
            for shape in shapes:
                if shape is not None:
                    _attributes(shape, row)
    return root


def cvat_rle(mask: np.ndarray) -> str:
    """CVAT's mask RLE of a bool (h, w) crop: row-major run lengths, starting with zeros."""
    flat = np.asarray(mask, bool).ravel()
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.r_[0, change, flat.size]
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs = [0, *runs]
    return ", ".join(str(r) for r in runs)


def _shape(parent: ET.Element, geom, as_mask: bool, item: LabeledInput, attrib: dict) -> ET.Element | None:
    common = {**attrib, "source": "auto", "occluded": "0", "z_order": "0"}
    if as_mask:
        window = geometry_window(geom, item.height, item.width)
        if window is None or not window[2].any():
            return None
        r0, c0, m = window
        rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
        crop = m[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        return ET.SubElement(parent, "mask", rle=cvat_rle(crop), left=str(c0 + cols[0]), top=str(r0 + rows[0]),
                             width=str(crop.shape[1]), height=str(crop.shape[0]), **common)
    ps = parts(geom)
    if not ps or len(ring_xy(ps[0].exterior)) < 3:
        return None
    points = ";".join(f"{x:.2f},{y:.2f}" for x, y in ring_xy(ps[0].exterior))
    return ET.SubElement(parent, "polygon", points=points, **common)


def _attributes(shape: ET.Element, row) -> None:
    values = {"object_id": str(row.object_id), "score": f"{float(row.confidence):.6f}",
              "review_priority": f"{float(getattr(row, 'review_priority', 0.0) or 0.0):.6f}"}
    for name, _, _ in ATTRIBUTES:
        ET.SubElement(shape, "attribute", name=name).text = values[name]


def _label(labels: LabelSet, class_name: str) -> str:
    return labels.category_of(class_name).name


def _root(labels: LabelSet, name: str, mode: str, size: int, item: LabeledInput | None) -> ET.Element:
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = VERSION
    meta = ET.SubElement(root, "meta")
    task = ET.SubElement(meta, "task")
    stamp = labels.created_at.isoformat()
    for tag, text in (("id", "1"), ("name", name), ("size", str(size)), ("mode", mode), ("overlap", "0"),
                      ("bugtracker", ""), ("created", stamp), ("updated", stamp), ("subset", "default"),
                      ("start_frame", "0"), ("stop_frame", str(max(size - 1, 0))), ("frame_filter", "")):
        ET.SubElement(task, tag).text = text
    xml_labels = ET.SubElement(task, "labels")
    for c in labels.categories:
        label = ET.SubElement(xml_labels, "label")
        ET.SubElement(label, "name").text = c.name
        ET.SubElement(label, "color").text = c.color
        ET.SubElement(label, "type").text = "any"
        attrs = ET.SubElement(label, "attributes")
        for attr_name, input_type, values in ATTRIBUTES:
            attr = ET.SubElement(attrs, "attribute")
            for tag, text in (("name", attr_name), ("mutable", "True"), ("input_type", input_type),
                              ("default_value", "0" if input_type == "number" else ""), ("values", values)):
                ET.SubElement(attr, tag).text = text
    if item is not None and mode == "interpolation":
        size_el = ET.SubElement(task, "original_size")
        ET.SubElement(size_el, "width").text = str(item.width)
        ET.SubElement(size_el, "height").text = str(item.height)
    ET.SubElement(meta, "dumped").text = stamp
    if item is not None and mode == "interpolation":
        ET.SubElement(meta, "source").text = item.source
    return root


def _bytes(root: ET.Element) -> bytes:
    ET.indent(root, space="  ")
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="utf-8")
