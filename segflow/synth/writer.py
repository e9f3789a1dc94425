"""Write a synthetic clip: H.264 mp4 plus COCO and YouTube-VIS ground truth.

Frames stream from :func:`segflow.synth.scene.generate` straight into ffmpeg (the
binary shipped by imageio-ffmpeg) and masks are RLE-encoded as they arrive, so only
one frame is ever held. Every file is written under a temporary name in the output
folder and moved into place with ``os.replace``: a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import numpy as np
from pycocotools import mask as mask_utils

from segflow.errors import SegflowError
from segflow.synth.scene import CLASSES, check_params, generate

MACRO_BLOCK = 16
"""Frame sides must be multiples of this (H.264 macroblocks; no silent resizing)."""

# High quality, short GOP (cheap seeks), no B-frames (decode order == display order).
_X264_PARAMS = ["-crf", "12", "-preset", "veryfast", "-g", "25", "-bf", "0", "-movflags", "+faststart", "-f", "mp4"]


@dataclass
class SynthPaths:
    """The three files of one written clip."""

    video: Path
    coco: Path
    ytvis: Path


def categories() -> list[dict[str, Any]]:
    """COCO/YouTube-VIS categories: ``CLASSES[i]`` has id ``i + 1``."""
    return [{"id": i + 1, "name": c, "supercategory": "shape"} for i, c in enumerate(CLASSES)]


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """COCO RLE of a bool (H, W) mask, JSON-ready (``counts`` as str)."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _rle_stats(rle: dict[str, Any]) -> tuple[int, list[float]]:
    """Area and [x, y, w, h] box of an RLE (pycocotools wants bytes counts)."""
    raw = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    return int(mask_utils.area(raw)), [float(v) for v in mask_utils.toBbox(raw)]


def _tmp_path(final: Path) -> Path:
    # Same folder (os.replace must not cross filesystems); keep the suffix so ffmpeg
    # still sees ".mp4"; a leading dot hides the partial file from globbing readers.
    return final.with_name(f".{final.stem}.{uuid.uuid4().hex[:8]}.tmp{final.suffix}")


def _write_json_atomic(obj: Any, final: Path) -> None:
    tmp = _tmp_path(final)
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, separators=(",", ":"))
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_clip(
    out_dir: str | Path,
    seed: int,
    n_frames: int = 120,
    size: tuple[int, int] = (480, 640),
    name: str | None = None,
    fps: float = 25.0,
    *,
    n_objects: int | None = None,
    occluders: int | None = None,
) -> SynthPaths:
    """Render synthetic video ``seed`` to ``<name>.mp4``, ``<name>.coco.json`` and ``<name>.ytvis.json``.

    ``size`` is (height, width), both multiples of 16 and >= 64; ``name`` defaults to
    ``f"synth_{seed:04d}"``. COCO image ``frame_index`` i is decoded frame i of the mp4.
    Returns the three paths; existing files of the same name are replaced atomically.
    """
    h, w = check_params(n_frames, size, multiple_of=MACRO_BLOCK)
    if not (isinstance(fps, (int, float)) and 0 < fps <= 1000):
        raise SegflowError(f"fps must be in (0, 1000], got {fps!r}")
    frames = generate(seed, n_frames, (h, w), n_objects, occluders=occluders)  # validates the rest
    name = name or f"synth_{seed:04d}"
    if "/" in name or "\\" in name or name.startswith("."):
        raise SegflowError(f"name must be a plain file stem, got {name!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = SynthPaths(out / f"{name}.mp4", out / f"{name}.coco.json", out / f"{name}.ytvis.json")

    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    tracks: dict[int, dict[str, Any]] = {}  # track_id -> YouTube-VIS annotation being filled
    tmp_video = _tmp_path(paths.video)
    writer = imageio_ffmpeg.write_frames(
        str(tmp_video), (w, h), fps=fps, codec="libx264", pix_fmt_in="rgb24", pix_fmt_out="yuv420p",
        quality=None, macro_block_size=MACRO_BLOCK, ffmpeg_log_level="error", output_params=_X264_PARAMS,
    )
    try:
        writer.send(None)  # start ffmpeg
        for frame in frames:
            writer.send(np.ascontiguousarray(frame.image))
            image_id = frame.index + 1
            images.append({
                "id": image_id, "file_name": paths.video.name, "frame_index": frame.index,
                "width": w, "height": h, "video": name, "timestamp_s": frame.index / fps,
            })
            for inst in frame.instances:
                rle = encode_mask(inst.mask)
                area, bbox = _rle_stats(rle)
                cat = CLASSES.index(inst.class_name) + 1
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id, "category_id": cat,
                    "segmentation": rle, "area": area, "bbox": bbox, "iscrowd": 0, "track_id": inst.track_id,
                })
                tr = tracks.setdefault(inst.track_id, {
                    "category_id": cat, "track_id": inst.track_id, "segmentations": [None] * n_frames,
                    "areas": [None] * n_frames, "bboxes": [None] * n_frames, "iscrowd": 0,
                })
                tr["segmentations"][frame.index], tr["areas"][frame.index], tr["bboxes"][frame.index] = rle, area, bbox
        writer.close()
        os.replace(tmp_video, paths.video)
    finally:
        writer.close()  # no-op when already closed; stops ffmpeg on errors
        tmp_video.unlink(missing_ok=True)

    info = {"description": "segflow synthetic shapes clip", "seed": seed, "fps": fps, "frames": n_frames}
    cats = categories()
    _write_json_atomic({"info": info, "images": images, "annotations": annotations, "categories": cats}, paths.coco)
    video = {
        "id": 1, "name": name, "width": w, "height": h, "length": n_frames,
        "file_names": [f"{name}.mp4#{i}" for i in range(n_frames)],
    }
    yt_anns = [{"id": i + 1, "video_id": 1, **tracks[tid]} for i, tid in enumerate(sorted(tracks))]
    _write_json_atomic({"info": info, "videos": [video], "annotations": yt_anns, "categories": cats}, paths.ytvis)
    return paths
