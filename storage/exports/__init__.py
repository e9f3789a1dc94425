"""Exports of the label table: COCO, Encord label rows, YouTube-VIS JSON, CVAT XML, Label Studio JSON.

    export_labels(out_dir, "coco", "labels.json")   # -> Path of the written file (+ the frames it names)

Pure functions build each document from the table (`coco_document`,
`encord_label_rows`, `ytvis_document`); `export_labels` validates the arguments,
builds one and writes it atomically.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

from segflow.errors import SegflowError
from segflow.storage.atomic import write_bytes_atomic
from segflow.storage.exports.coco import coco_document
from segflow.storage.exports.cvat import cvat_documents
from segflow.storage.exports.common import LabelSet, load_label_set, read_table, to_json_bytes
from segflow.storage.exports.encord import encord_label_rows, encord_ontology
from segflow.storage.exports.label_studio import label_studio_tasks
from segflow.storage.exports.remote import check_remote_target, copy_labels_down, label_files_of, upload
from segflow.storage.exports.target import default_file_name, is_uri, names_folder, resolve_target, split_target
from segflow.storage.exports.frames import FRAME_FORMATS, check_sources, write_frames, write_images
from segflow.storage.exports.ytvis import ytvis_document

FORMATS = ("coco", "encord", "youtube-vis", "cvat", "label-studio")
_ALIASES = {"ytvis": "youtube-vis", "youtube_vis": "youtube-vis", "yt-vis": "youtube-vis",
            "label_studio": "label-studio", "labelstudio": "label-studio"}
_BUILDERS = {"coco": coco_document, "encord": encord_label_rows, "youtube-vis": ytvis_document}
_MULTI_FILE = {"cvat": cvat_documents}  # formats with one file per video: name -> bytes

__all__ = [
    "FORMATS", "LabelSet", "check_format", "coco_document", "default_file_name", "encord_label_rows",
    "export_labels", "load_label_set", "read_table", "resolve_target", "ytvis_document",
]


def check_format(fmt: str) -> str:
    """The canonical format name, or one clear SegflowError listing the formats."""
    name = str(fmt).strip().lower()
    name = _ALIASES.get(name, name)
    if name not in FORMATS:
        raise SegflowError(f"--format {fmt!r}: unknown export format (allowed: {', '.join(FORMATS)})")
    return name


def check_export(out_dir: str | Path, fmt: str, to: str | Path, review_priority: bool = False) -> tuple[str, Path | str]:
    """Validate every argument of an export before any work (writes nothing). `out_dir`
    and `to` may be object-store URIs (`s3://`): the target is then `to` itself."""
    name = check_format(fmt)
    if review_priority and name != "encord":
        raise SegflowError(f"--review-priority: only for --format encord (not {name})")
    if is_uri(to):
        check_remote_target(os.fspath(to))
        target: Path | str = os.fspath(to)
    else:
        target = resolve_target(to, name)
    if is_uri(out_dir):
        label_files_of(os.fspath(out_dir))  # refuses a folder without a label table
    else:
        read_table(out_dir)  # refuses a folder without a label table
    return name, target


def check_export_sources(out_dir: str | Path, fmt: str, frames: bool | None = None) -> None:
    """Refuse (one SegflowError line, writes nothing) an export whose frames must be written
    from an input that is gone or changed since it was labeled: the check `export_labels`
    makes, made first so a refusal is one line, not a failed flow run (local label folders;
    an object store's are checked in the flow). Inputs are hashed once (storage/keys.py)."""
    name = check_format(fmt)
    if is_uri(out_dir) or name not in NAMES_FRAMES or frames is False:
        return
    check_sources(load_label_set(out_dir))


def export_labels(
    out_dir: str | Path, fmt: str, to: str | Path, image_prefix: str | None = None, frames: bool | None = None,
    frame_format: str = "jpg", review_priority: bool = False,
) -> Path | str:
    """Export the label table of `out_dir` as `fmt` to `to` (a file, or a folder); returns the file.

    Either may be an object store's URI (`s3://bucket/...`; exports/remote.py): the
    export is made in a local folder and uploaded, and its URI returned.

    `image_prefix`: Label Studio's `data.image` is this + the image's name (default: its path).
    `frames` (default: on for the formats that name frame files, NAMES_FRAMES) also
    writes every labeled frame the export names, beside the export file, as
    `frame_format` (jpg or png; see exports/frames.py). Inputs that are gone or changed
    are refused before anything is written. CVAT: the image inputs are placed under
    `images/` beside the XML (`frames` not False), CVAT's own export layout, where
    datumaro's CVAT importer looks for them. `review_priority` (encord only) answers each
    instance's review priority as an object attribute and writes the Encord ontology that
    declares it beside the rows, as `<file stem>.ontology.json`.
    """
    name, target = check_export(out_dir, fmt, to, review_priority)
    ext = check_frame_format(frame_format)
    if is_uri(out_dir) or is_uri(to):
        return _through_local(out_dir, name, to, image_prefix=image_prefix, frames=frames, frame_format=ext,
                              review_priority=review_priority)
    labels = dataclasses.replace(load_label_set(out_dir), frame_ext=ext)
    with_frames = (name in NAMES_FRAMES) if frames is None else bool(frames) and name in NAMES_FRAMES
    if with_frames:
        check_sources(labels)
    try:
        if name == "label-studio":
            tasks = label_studio_tasks(labels, image_prefix, target.parent, images_written=with_frames)
            if with_frames:
                write_frames(labels, target.parent, ext)
            return write_bytes_atomic(target, to_json_bytes(tasks))
        if name in _MULTI_FILE:
            images = frames is not False and any(i.kind == "image" for i in labels.inputs)
            if images:  # a gone or changed image: refused before any file is written
                check_sources(dataclasses.replace(labels, inputs=tuple(i for i in labels.inputs if i.kind == "image")))
            written = _write_files(_MULTI_FILE[name](labels), target, to)
            if images:
                write_images(labels, written if written.is_dir() else written.parent)
            return written
        if name == "encord" and review_priority:
            document = encord_label_rows(labels, review_priority=True)
            write_bytes_atomic(target.with_name(f"{target.stem}.ontology.json"), to_json_bytes(encord_ontology(labels)))
        else:
            document = _BUILDERS[name](labels)
        if with_frames:
            write_frames(labels, target.parent, ext)
        return write_bytes_atomic(target, to_json_bytes(document))
    except OSError as exc:
        raise SegflowError(f"--to {to}: cannot write ({exc.strerror or exc})") from None


def _through_local(out_dir: str | Path, name: str, to: str | Path, **options) -> Path | str:
    """`export_labels` of an object-store label folder or to an object-store target: a
    local copy of the labels, and an export made in a local folder, then uploaded."""
    if is_uri(to) and name == "label-studio" and not options.get("image_prefix"):
        raise SegflowError(f"--to {to}: Label Studio tasks name each image by path; for an object store give "
                           "--image-prefix (where the images are served from)")
    with tempfile.TemporaryDirectory(prefix="segflow-export-") as tmp:
        labels = copy_labels_down(os.fspath(out_dir), Path(tmp, "labels")) if is_uri(out_dir) else out_dir
        if not is_uri(to):
            return export_labels(labels, name, to, **options)
        folder, file_name = split_target(os.fspath(to))
        staging = Path(tmp, "export")
        staging.mkdir()
        written = Path(export_labels(labels, name, staging / file_name if file_name else staging, **options))
        upload(staging, folder)
        return folder if written == staging else f"{folder}/{written.relative_to(staging).as_posix()}"


def _write_files(files: dict[str, bytes], target: Path, to: str | Path) -> Path:
    """One file to a file `--to`: written to `target`. Otherwise (several, one per video, or
    a folder `--to`): each under its own name (`<video>.xml`) into the folder `--to` names
    (created), each atomically; returns that folder."""
    if len(files) == 1 and not names_folder(to):
        return write_bytes_atomic(target, next(iter(files.values())))
    folder = Path(to).expanduser().resolve()
    if folder.suffix and not folder.is_dir():
        raise SegflowError(f"--to {to}: this label set makes {len(files)} files (one per video); give a folder")
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        write_bytes_atomic(folder / name, data)
    return folder


NAMES_FRAMES = ("coco", "youtube-vis", "label-studio")  # formats whose records name frame image files


def check_frame_format(frame_format: str) -> str:
    """jpg (also jpeg) or png, or one clear SegflowError."""
    ext = str(frame_format).strip().lower().lstrip(".")
    ext = "jpg" if ext == "jpeg" else ext
    if ext not in FRAME_FORMATS:
        raise SegflowError(f"--frame-format {frame_format!r}: unknown (allowed: {', '.join(FRAME_FORMATS)})")
    return ext
