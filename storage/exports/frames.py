"""The frame images an export names, written where it names them.

COCO `file_name` and YouTube-VIS `file_names` are paths relative to the export file's
folder: `<video stem>/<frame:06d>.jpg` for a video's labeled frames (decoded from the
labeled video, checked by content to be the bytes that were labeled), the image's own
relative path for an image (linked, or copied across filesystems). With them in place,
pycocotools' showAnns, FiftyOne, CVAT or an Encord upload open the export as it is.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from segflow.errors import SegflowError
from segflow.storage.atomic import write_bytes_atomic
from segflow.storage.exports.common import LabeledInput, LabelSet, frame_file_name, frame_names
from segflow.storage.fs import as_path, fetch, is_remote
from segflow.storage.keys import content_id

FRAME_FORMATS = ("jpg", "png")
JPEG_QUALITY = 95
BATCH = 16  # frames decoded per call


def frame_paths(labels: LabelSet, root: Path, ext: str = "jpg") -> dict[str, dict[int, Path]]:
    """video_id -> {labeled frame: the file the export names for it}, under `root`."""
    stems = frame_names(labels.inputs)
    return {i.video_id: {f: root / frame_file_name(stems[i.video_id], i.kind, f, ext) for f in i.frames}
            for i in labels.inputs}


def check_sources(labels: LabelSet) -> None:
    """Refuse (one SegflowError line, nothing written) when an input whose frames the
    export must write is gone or no longer holds the bytes that were labeled."""
    for item in labels.inputs:
        local = _local(item)
        if not local.is_file():
            raise SegflowError(f"--frames: {item.source} is gone, so its frames cannot be written "
                               "(export with --no-frames, or put the input back)")
        if content_id(local) != item.video_id:
            raise SegflowError(f"--frames: {item.source} changed since it was labeled (content id "
                               f"{content_id(local)}, labels are of {item.video_id}); export with --no-frames")


def write_frames(labels: LabelSet, root: Path, ext: str = "jpg") -> int:
    """Write every labeled frame the export names under `root`; returns how many.

    Video frames are decoded `BATCH` at a time and encoded as JPEG (quality 95) or
    PNG; images are hard-linked where possible, else copied. Each file is written
    atomically, so a reader never sees half a frame.
    """
    check_sources(labels)
    paths = frame_paths(labels, root, ext)
    written = 0
    for item in labels.inputs:
        targets = paths[item.video_id]
        if item.kind == "image":
            written += _place_image(_local(item), targets[0])
            continue
        for frame, rgb in _decode(_local(item), sorted(targets)):
            write_bytes_atomic(targets[frame], encode(rgb, ext))
            written += 1
    return written


def write_images(labels: LabelSet, root: Path) -> int:
    """CVAT's layout (its 'CVAT for images 1.1' export zip): every image input placed under
    `root / "images"`, by the name the CVAT XML gives it (`frame_names`), linked where
    possible, else copied; refuses an image gone or changed first. Returns how many."""
    images = tuple(i for i in labels.inputs if i.kind == "image")
    check_sources(dataclasses.replace(labels, inputs=images))
    names = frame_names(labels.inputs)  # all inputs: the names images_document gives
    return sum(_place_image(_local(i), root / "images" / names[i.video_id]) for i in images)


def encode(rgb: np.ndarray, ext: str) -> bytes:
    """An RGB uint8 (H, W, 3) frame as JPEG or PNG bytes."""
    import cv2

    params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if ext == "jpg" else []
    ok, buf = cv2.imencode(f".{ext}", np.ascontiguousarray(rgb[..., ::-1]), params)
    if not ok:
        raise SegflowError(f"--frame-format {ext}: OpenCV could not encode a frame")
    return buf.tobytes()


def _decode(path: Path, frames: list[int]) -> Iterator[tuple[int, np.ndarray]]:
    import decord  # local: slow to import, and only videos need it

    reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
    for lo in range(0, len(frames), BATCH):
        chunk = frames[lo:lo + BATCH]
        yield from zip(chunk, reader.get_batch(chunk).asnumpy())


def _place_image(source: Path, target: Path) -> int:
    if target.exists() and os.path.samefile(source, target):
        return 0  # the export sits where the images are
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)
    return 1


def _local(item: LabeledInput) -> Path:
    path = as_path(item.source)
    return fetch(path) if is_remote(path) else Path(item.source)
