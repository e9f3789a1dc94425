"""Previews of a label table: an overlay mp4 per video and a contact sheet of sampled frames.

Each instance is filled semi-transparently in its track's color (holes stay clear),
outlined, and tagged with class, track and score. The color comes from the
`object_id`, so an object keeps its color on every frame and in every preview.

    write_preview("labels/", "preview/")   # -> {"clip-1a2b3c4d video": Path, "clip-1a2b3c4d sheet": Path}
"""

from __future__ import annotations

import colorsys
import hashlib
import math
import os
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from segflow.errors import SegflowError
from segflow.storage.atomic import write_bytes_atomic
from segflow.storage.exports.common import LabeledInput, geometry_window, labeled_inputs, parts, ring_xy
from segflow.storage.keys import content_id
from segflow.storage.layout import check_folder_writable

ALPHA = 0.45  # fill opacity: the object stays visible under its color
DEFAULT_SHEET_FRAMES = 12
MAX_SHEET_FRAMES = 400
THUMB_WIDTH = 320
_BATCH = 16  # frames decoded per call


# ---- drawing ---------------------------------------------------------------------------


def track_color(object_id: str) -> tuple[int, int, int]:
    """A stable, saturated RGB color for an object id (the same in every process and run)."""
    digest = hashlib.sha1(str(object_id).encode()).digest()
    hue = int.from_bytes(digest[:4], "big") / 2**32
    sat = 0.65 + 0.35 * digest[4] / 255  # vivid, but not all the same
    val = 0.85 + 0.15 * digest[5] / 255
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return int(round(r * 255)), int(round(g * 255)), int(round(b * 255))


def render_overlay(frame: np.ndarray, rows: pd.DataFrame | Iterable[Mapping[str, Any]], alpha: float = ALPHA,
                   labels: bool = True) -> np.ndarray:
    """A copy of an RGB uint8 frame with `rows` (label-table rows of that frame) drawn on it.

    A row needs `geometry` (WKB bytes or a shapely geometry) and `object_id`; `class_name`,
    `confidence` and `track_id` go into its tag. Pixels inside a polygon become
    (1 - alpha) * pixel + alpha * track_color; outlines and tags are opaque.
    """
    out = np.ascontiguousarray(frame[..., :3], dtype=np.uint8).copy()
    h, w = out.shape[:2]
    items = _as_records(rows)
    drawn = []
    for row in items:
        geom = _geometry(row["geometry"])
        color = track_color(row["object_id"])
        window = geometry_window(geom, h, w)
        if window is None:
            continue
        r0, c0, mask = window
        region = out[r0:r0 + mask.shape[0], c0:c0 + mask.shape[1]]
        blended = region[mask].astype(np.float32) * (1.0 - alpha) + np.float32(color) * alpha
        region[mask] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
        drawn.append((row, geom, color))
    for row, geom, color in drawn:  # outlines after all fills, so none is washed out
        _outline(out, geom, color)
    if labels:
        for row, geom, color in drawn:
            _tag(out, row, geom, color)
    return out


def _as_records(rows) -> list[Mapping[str, Any]]:
    if isinstance(rows, pd.DataFrame):
        return rows.to_dict("records")
    return list(rows)


def _geometry(value):
    import shapely

    return shapely.from_wkb(value) if isinstance(value, (bytes, bytearray, memoryview)) else value


_SHIFT = 4  # cv2 sub-pixel bits


def _outline(img: np.ndarray, geom, color: tuple[int, int, int]) -> None:
    # Table coordinates put pixel centers at +0.5; cv2 puts them at integers.
    rings = [r for p in parts(geom) for r in (p.exterior, *p.interiors)]
    pts = [np.rint((ring_xy(r) - 0.5) * (1 << _SHIFT)).astype(np.int32) for r in rings if len(r.coords) >= 3]
    if pts:
        cv2.polylines(img, pts, isClosed=True, color=color, thickness=1, lineType=cv2.LINE_AA, shift=_SHIFT)


def tag_text(row: Mapping[str, Any]) -> str:
    """'class #track score' (or the object id's tail when tracking was off)."""
    track = row.get("track_id")
    ident = f"#{int(track)}" if track is not None and not pd.isna(track) else str(row.get("object_id", ""))[-7:]
    parts_ = [str(row.get("class_name", "")), ident]
    if row.get("confidence") is not None:
        parts_.append(f"{float(row['confidence']):.2f}")
    return " ".join(p for p in parts_ if p)


def _tag(img: np.ndarray, row: Mapping[str, Any], geom, color: tuple[int, int, int]) -> None:
    h, w = img.shape[:2]
    scale = max(0.35, min(h, w) / 700)
    thick = 1 if scale < 0.8 else 2
    text = tag_text(row)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    x0, y0, _, y1 = geom.bounds
    x = int(min(max(x0, 0), max(w - tw - 2, 0)))
    # Above the object when there is room, else below it: never over its own pixels.
    top = int(y0) - th - base - 2 if y0 >= th + base + 2 else min(int(math.ceil(y1)) + 1, h - th - base - 2)
    cv2.rectangle(img, (x, top), (x + tw + 2, top + th + base + 2), color, thickness=cv2.FILLED)
    ink = (0, 0, 0) if sum(color) > 380 else (255, 255, 255)
    cv2.putText(img, text, (x + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, ink, thick, cv2.LINE_AA)


def contact_sheet(images: list[np.ndarray], captions: list[str], thumb_width: int = THUMB_WIDTH,
                  columns: int | None = None) -> np.ndarray:
    """Thumbnails in a grid (RGB uint8), each captioned underneath."""
    if not images:
        raise ValueError("contact_sheet needs at least one image")
    h, w = images[0].shape[:2]
    tw = min(thumb_width, w)
    th = max(1, round(h * tw / w))
    cap = 18
    cols = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    pad = 4
    sheet = np.full((rows * (th + cap + pad) + pad, cols * (tw + pad) + pad, 3), 24, np.uint8)
    for i, (img, text) in enumerate(zip(images, captions)):
        r, c = divmod(i, cols)
        y, x = pad + r * (th + cap + pad), pad + c * (tw + pad)
        sheet[y:y + th, x:x + tw] = cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA)
        cv2.putText(sheet, text, (x + 2, y + th + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (230, 230, 230), 1, cv2.LINE_AA)
    return sheet


def sample_frames(frames: tuple[int, ...] | list[int], n: int) -> list[int]:
    """Up to `n` frames spread evenly over `frames`, first and last included."""
    if n <= 0 or not frames:
        return []
    idx = np.unique(np.rint(np.linspace(0, len(frames) - 1, min(n, len(frames)))).astype(int))
    return [int(frames[i]) for i in idx]


# ---- writing ---------------------------------------------------------------------------


def write_preview(out_dir: str | Path, to_dir: str | Path, source: str | None = None,
                  frames: int = DEFAULT_SHEET_FRAMES, alpha: float = ALPHA) -> dict[str, Path]:
    """Write previews of an output folder's labels into `to_dir`.

    For a video: `<name>-<id>.mp4` (every labeled frame with its overlay) and
    `<name>-<id>-sheet.png` (`frames` sampled frames). For an image: `<name>-<id>.png`,
    plus one `images-sheet.png` sampling the images. `source` limits the preview to one
    input (its path, or its video_id); a path also says where the media is now, if it
    moved since labeling. Returns {"<name>-<id> video"|"... sheet"|"... image": path},
    plus "images sheet" when there are images.
    """
    chosen = check_preview(out_dir, to_dir, source, frames)
    target = Path(to_dir).expanduser().resolve()
    try:
        target.mkdir(parents=True, exist_ok=True)
        return _write_all(chosen, target, frames, alpha)
    except OSError as exc:  # a full disk, a read-only mount, /proc: one line, not a traceback
        raise SegflowError(f"--to {to_dir}: cannot write previews ({exc.strerror or exc})") from None


def _write_all(chosen: list[tuple[LabeledInput, Path]], target: Path, frames: int, alpha: float) -> dict[str, Path]:
    result: dict[str, Path] = {}
    images: list[tuple[LabeledInput, np.ndarray]] = []
    for item, media in chosen:
        name = preview_name(item)
        if item.kind == "image":
            overlay = _image_overlay(item, media, alpha)
            result[f"{name} image"] = _write_png(target / f"{name}.png", overlay)
            images.append((item, overlay))
        else:
            for kind, path in _video_preview(item, media, target, name, frames, alpha).items():
                result[f"{name} {kind}"] = path
    if images:
        picked = [images[i] for i in sample_frames(list(range(len(images))), frames)]
        sheet = contact_sheet([img for _, img in picked], [Path(i.source).name[:40] for i, _ in picked])
        result["images sheet"] = _write_png(target / "images-sheet.png", sheet)
    return result


def preview_name(item: LabeledInput) -> str:
    """The file-name stem of an input's previews: `<name>-<first 8 of video_id>` (unique per content)."""
    return f"{Path(item.source).stem}-{item.video_id[:8]}"


def check_preview(out_dir: str | Path, to_dir: str | Path, source: str | None = None,
                  frames: int = DEFAULT_SHEET_FRAMES) -> list[tuple[LabeledInput, Path]]:
    """Validate every preview argument (writes nothing); returns the inputs and their media files."""
    if not 1 <= frames <= MAX_SHEET_FRAMES:
        raise SegflowError(f"--frames {frames}: out of range (allowed: 1 to {MAX_SHEET_FRAMES})")
    path = Path(to_dir).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise SegflowError(f"--to {to_dir}: is a file, not a folder")
    check_folder_writable(path, f"--to {to_dir}")
    return _choose(labeled_inputs(out_dir), source)


def _choose(inputs: tuple[LabeledInput, ...], source: str | None) -> list[tuple[LabeledInput, Path]]:
    """The inputs to preview, each with the media file to read it from."""
    if source is None:
        missing = [i.source for i in inputs if not Path(i.source).is_file()]
        if missing:
            raise SegflowError(f"input {missing[0]}: media file is gone; pass --input PATH to say where it is now")
        return [(i, Path(i.source)) for i in inputs]
    path = Path(source).expanduser()
    if path.is_file():
        resolved = str(path.resolve())
        vid = content_id(path)
        for i in inputs:
            if i.video_id == vid or i.source == resolved:
                return [(i, path)]
        raise SegflowError(f"--input {source}: this file's content is not labeled in this output folder")
    for i in inputs:
        if source in (i.video_id, i.source) or (len(source) >= 8 and i.video_id.startswith(source)):
            if not Path(i.source).is_file():
                raise SegflowError(f"--input {source}: media file {i.source} is gone; pass its new path")
            return [(i, Path(i.source))]
    known = ", ".join(Path(i.source).name for i in inputs[:5])
    raise SegflowError(f"--input {source}: no such file or labeled input (labeled: {known})")


def _image_overlay(item: LabeledInput, media: Path, alpha: float) -> np.ndarray:
    from segflow.media import load_image

    return render_overlay(load_image(media), item.rows, alpha)


def _video_preview(item: LabeledInput, media: Path, target: Path, name: str, n_sheet: int,
                   alpha: float) -> dict[str, Path]:
    import decord  # local: slow to import, and images don't need it
    import imageio_ffmpeg

    vr = decord.VideoReader(str(media), ctx=decord.cpu(0), num_threads=1)
    frames = [f for f in item.frames if f < len(vr)]
    if not frames:
        raise SegflowError(f"input {media}: has none of the labeled frames (was it replaced?)")
    fps = item.fps or float(vr.get_avg_fps()) or 10.0
    by_frame = {int(f): rows for f, rows in item.rows.groupby("frame")}
    empty = item.rows.iloc[0:0]
    sheet_at = set(sample_frames(frames, n_sheet))
    thumbs: list[tuple[int, np.ndarray]] = []
    video_path = target / f"{name}.mp4"
    tmp = target / f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp.mp4"  # ffmpeg picks the muxer by suffix
    writer = imageio_ffmpeg.write_frames(
        str(tmp), (item.width, item.height), fps=fps, codec="libx264", quality=None,
        output_params=["-crf", "23", "-preset", "veryfast"], macro_block_size=2, pix_fmt_out="yuv420p",
    )
    try:
        writer.send(None)
        try:
            for lo in range(0, len(frames), _BATCH):
                idx = frames[lo:lo + _BATCH]
                for f, img in zip(idx, vr.get_batch(idx).asnumpy()):
                    overlay = render_overlay(img, by_frame.get(f, empty), alpha)
                    writer.send(np.ascontiguousarray(overlay))
                    if f in sheet_at:
                        thumbs.append((f, overlay))
        finally:
            writer.close()  # always reap ffmpeg
        os.replace(tmp, video_path)  # readers never see a half-written mp4
    finally:
        tmp.unlink(missing_ok=True)
    sheet = contact_sheet([t for _, t in thumbs], [f"frame {f}" for f, _ in thumbs])
    return {"video": video_path, "sheet": _write_png(target / f"{name}-sheet.png", sheet)}


def _write_png(path: Path, rgb: np.ndarray) -> Path:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise SegflowError(f"cannot encode {path.name} as PNG")
    return write_bytes_atomic(path, buf.tobytes())
