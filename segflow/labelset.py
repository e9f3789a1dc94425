"""`LabelSet`: a labeled output folder as pandas, masks and supervision detections.

    labels = segflow.open("labels/")              # or s3://bucket/labels
    labels.table                                   # one row per instance per frame
    labels.masks(video_id, 3)                      # bool (N, H, W), one per instance
    labels.to_supervision(video_id, 3)             # sv.Detections of frame 3

Reading a folder imports neither torch nor Prefect: the table, masks and detections
come from the Parquet files (and their footers); frame images are decoded from the
inputs, which must still be where they were labeled, unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import shapely

from segflow.errors import SegflowError
from segflow.ops.raster import rasterize  # the one rasterizer, the exports' too
from segflow.storage.fs import as_path, is_remote, read_table
from segflow.storage.layout import Layout, label_files
from segflow.storage.manifest import read_manifest
from segflow.storage.table import labeled_inputs_of, labels_meta

if TYPE_CHECKING:
    import supervision as sv
    from PIL.Image import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")  # as the decode stage reads
# table columns handed on in `sv.Detections.data` (those the table has)
DETECTION_DATA = ("object_id", "class_name", "feature_hash", "frame_class_name", "review_priority")
NUMERIC_DATA = {"review_priority"}
DECODE_BATCH = 16  # video frames decoded per call by `iter_frames`


@dataclass(frozen=True)
class LabeledInput:
    """One input of a label set.

    `frames` lists every labeled frame, also those without any instance (read from the
    label files' footers); `width`/`height` are None only for an input without a single
    instance whose file is gone.
    """

    source: str  # the input's path or URI, as in the table's `source` column
    video_id: str  # digest of its content (the table's `video_id`)
    kind: str  # "video" or "image"
    frames: tuple[int, ...]
    instances: int
    width: int | None
    height: int | None


class Frame(NamedTuple):
    """What `LabelSet.iter_frames` yields: a frame index, its image and its detections."""

    frame: int
    image: "Image"  # PIL RGB image (supervision's annotators draw on it in true colors)
    detections: "sv.Detections"


class LabelSet:
    """A labeled output folder (local or `s3://`): see `segflow.open` and `segflow.label`.

    `summary` is the run summary (every input's status, frames, instances) when the set
    was returned by `segflow.label`, else None.
    """

    def __init__(self, out: str | os.PathLike, summary: dict | None = None) -> None:
        self.root = as_path(out)
        self.out = str(self.root)
        self.summary = summary
        files = label_files(self.root)
        if not files:
            raise SegflowError(f"LABELS {out}: no label table here (run `segflow label ... --out {out}` first)")
        self._files = files

    def __repr__(self) -> str:
        n = len(self.table)
        return (f"LabelSet({self.out!r}: {len(self.inputs)} input(s), {n} instance(s), "
                f"classes {', '.join(self.classes) or '-'})")

    # ---- the table -------------------------------------------------------------------

    @cached_property
    def table(self) -> pd.DataFrame:
        """The label table: one row per instance per frame (the product's columns), sorted
        by source, frame and object_id; `geometry` holds shapely (Multi)Polygons in pixel
        coordinates (a GeoDataFrame when GeoPandas is installed)."""
        df = self._rows.copy()
        try:
            import geopandas
        except ImportError:
            return df
        return geopandas.GeoDataFrame(df, geometry="geometry")

    @cached_property
    def _rows(self) -> pd.DataFrame:
        tables = []
        for path in self._files:
            try:
                tables.append(read_table(path))
            except Exception as exc:  # pyarrow raises several unrelated types for a damaged file
                raise SegflowError(f"LABELS {self.out}: label file {path} is unreadable "
                                   f"({str(exc).splitlines()[0][:200]})") from None
        df = pa.concat_tables(tables, promote_options="default").to_pandas()
        df = df.sort_values(["source", "frame", "object_id"], kind="stable").reset_index(drop=True)
        df["geometry"] = shapely.from_wkb(df["geometry"].to_numpy())
        return df

    @cached_property
    def _by_frame(self) -> dict[tuple[str, int], np.ndarray]:
        """(video_id, frame) -> row positions of `_rows` (in table order)."""
        groups = self._rows.groupby(["video_id", "frame"], sort=False).indices
        return {(str(v), int(f)): rows for (v, f), rows in groups.items()}

    @cached_property
    def classes(self) -> tuple[str, ...]:
        """Class names in ontology order: `class_id` i of `to_supervision` is `classes[i]`
        (the COCO export's category id is i + 1)."""
        in_table = dict(self._rows[["class_name", "feature_hash"]].drop_duplicates().itertuples(index=False, name=None))
        objects = ((self._manifest.get("last_run") or {}).get("ontology") or {}).get("objects") or []
        ontology = {str(o.get("class") or o.get("name")): o.get("featureHash") for o in objects if isinstance(o, dict)}
        if all(ontology.get(c) == fh for c, fh in in_table.items()):  # the run's ontology made this table
            return tuple(ontology)
        return tuple(sorted(in_table))

    @cached_property
    def _manifest(self) -> dict:
        return read_manifest(Layout(self.root))

    # ---- inputs and frames -----------------------------------------------------------

    @cached_property
    def inputs(self) -> tuple[LabeledInput, ...]:
        """Every labeled input, by source."""
        ranges: dict[str, set[int]] = {}
        sources: dict[str, str] = {}
        for path in self._files:
            for vid, source, start, end in labeled_inputs_of(labels_meta(path) or {}, path.parent.name):
                ranges.setdefault(vid, set()).update(range(start, end + 1))
                sources.setdefault(vid, source)
        known = self._manifest.get("inputs", {})
        rows = self._rows
        groups = rows.groupby("video_id", sort=False).indices
        frame_of, source_of = rows["frame"].to_numpy(), rows["source"].to_numpy()
        for vid, idx in groups.items():
            sources[vid] = str(source_of[idx[0]])
            ranges.setdefault(vid, set()).update(frame_of[idx].tolist())
        out = []
        for vid, frames in ranges.items():
            source = sources.get(vid) or vid
            idx = groups.get(vid, ())
            kind = known.get(source, {}).get("kind") or ("image" if source.lower().endswith(IMAGE_SUFFIXES) else "video")
            size = (int(rows["width"].iat[idx[0]]), int(rows["height"].iat[idx[0]])) if len(idx) else (None, None)
            out.append(LabeledInput(source, vid, kind, tuple(sorted(frames)), len(idx), *size))
        return tuple(sorted(out, key=lambda i: i.source))

    def input(self, video_id: str | os.PathLike | None = None) -> LabeledInput:
        """The input with this video_id or source; None: the only input of the set."""
        if video_id is None:
            if len(self.inputs) != 1:
                raise SegflowError(f"{self.out} holds {len(self.inputs)} inputs: name one by video_id or source "
                                   f"({_some(i.video_id for i in self.inputs)})")
            return self.inputs[0]
        key = os.fspath(video_id)
        found = self._lookup.get(key) or self._lookup.get(str(as_path(key)))
        if found is not None:
            return found
        raise SegflowError(f"video_id {key!r}: not in {self.out} (inputs: "
                           f"{_some(f'{i.video_id} {i.source}' for i in self.inputs)})")

    @cached_property
    def _lookup(self) -> dict[str, LabeledInput]:
        return {**{i.source: i for i in self.inputs}, **{i.video_id: i for i in self.inputs}}

    def frames(self, video_id: str | os.PathLike | None = None) -> list[int]:
        """Every labeled frame of an input (also frames without any instance), in order."""
        return list(self.input(video_id).frames)

    # ---- one frame's instances -------------------------------------------------------

    def rows(self, video_id: str | os.PathLike | None, frame: int) -> pd.DataFrame:
        """One frame's rows of the table (one per instance, ordered by object_id)."""
        item = self._frame(video_id, frame)
        return self._rows.iloc[self._by_frame.get((item.video_id, int(frame)), np.empty(0, np.int64))]

    def masks(self, video_id: str | os.PathLike | None, frame: int) -> np.ndarray:
        """One frame's instances as a bool array (N, H, W), in the order of `rows`.

        Each geometry is drawn by the one rasterizer (`segflow.ops.raster`, the exports'
        too): pixel (r, c), the unit square [c, c+1] x [r, r+1], is in when its centre is
        inside the geometry (holes cut out), so these are the pixels of the COCO export's RLEs.
        """
        item = self._frame(video_id, frame)
        rows = self.rows(item.video_id, frame)
        h, w = self._size(item)
        if not len(rows):
            return np.zeros((0, h, w), dtype=bool)
        return np.stack([rasterize(g, h, w) for g in rows["geometry"]])

    def to_supervision(self, video_id: str | os.PathLike | None, frame: int) -> "sv.Detections":
        """One frame's instances as `supervision.Detections`.

        xyxy (N, 4) float32: the tight box of each geometry; mask (N, H, W) bool: `masks`;
        confidence (N,) float32; class_id (N,) int64: index into `classes`; tracker_id (N,)
        int64: the table's track_id (None when tracking was off); data: "object_id",
        "class_name", "feature_hash" (and "frame_class_name", "review_priority" where the
        table has them) (N,) arrays.
        """
        sv = _supervision()
        rows = self.rows(video_id, frame)
        lookup = {c: i for i, c in enumerate(self.classes)}
        track = rows["track_id"]
        return sv.Detections(
            xyxy=rows[["x0", "y0", "x1", "y1"]].to_numpy(np.float32).reshape(-1, 4),
            mask=self.masks(video_id, frame),
            confidence=rows["confidence"].to_numpy(np.float32),
            class_id=np.array([lookup[c] for c in rows["class_name"]], dtype=np.int64),
            tracker_id=None if track.isna().any() else track.to_numpy(np.int64),
            data={k: rows[k].to_numpy() if k in NUMERIC_DATA else rows[k].to_numpy(str)
                  for k in DETECTION_DATA if k in rows.columns},
        )

    def _frame(self, video_id, frame: int) -> LabeledInput:
        item = self.input(video_id)
        if int(frame) not in item.frames:
            span = f"{item.frames[0]}..{item.frames[-1]}" if item.frames else "none"
            raise SegflowError(f"frame {frame} of {item.source} was not labeled (labeled frames: {span})")
        return item

    def _size(self, item: LabeledInput) -> tuple[int, int]:
        """(height, width) of an input's frames (from its rows, else from its file)."""
        if item.height is not None and item.width is not None:
            return item.height, item.width
        image = next(self._images(item, item.frames[:1]))
        return image.height, image.width

    # ---- frame images ----------------------------------------------------------------

    def iter_frames(self, video_id: str | os.PathLike | None = None,
                    frames: list[int] | None = None) -> Iterator[Frame]:
        """Yield (frame, image, detections) for the input's labeled frames (or `frames`),
        in order: the image is the decoded frame as a PIL RGB image, the detections are
        `to_supervision(video_id, frame)`. The input must be where it was labeled, unchanged.
        """
        item = self.input(video_id)  # checked now, not at the first next()
        wanted = list(item.frames) if frames is None else [int(f) for f in frames]
        for f in wanted:
            self._frame(item.video_id, f)
        return (Frame(f, image, self.to_supervision(item.video_id, f))
                for f, image in zip(wanted, self._images(item, wanted)))

    def image(self, video_id: str | os.PathLike | None, frame: int) -> "Image":
        """One labeled frame's image (PIL, RGB), decoded from the input."""
        item = self._frame(video_id, frame)
        return next(self._images(item, [int(frame)]))

    def _images(self, item: LabeledInput, frames) -> Iterator["Image"]:
        from PIL import Image

        path = _local_input(item)
        if item.kind == "image":
            with Image.open(path) as im:
                yield im.convert("RGB") if im.mode not in ("I;16", "I;16B", "I;16L", "I") else _to_8bit(im)
            return
        import decord  # local: slow to import, and images need none of it

        reader = decord.VideoReader(path, ctx=decord.cpu(0))
        for lo in range(0, len(frames), DECODE_BATCH):
            batch = reader.get_batch(list(frames[lo:lo + DECODE_BATCH])).asnumpy()
            yield from (Image.fromarray(f) for f in batch)

    # ---- exports ---------------------------------------------------------------------

    def export(self, format: str, to: str | os.PathLike, **options: Any):
        """Export the set as `segflow export OUT --format FORMAT --to TO` does (a Prefect
        flow run where a Prefect API is configured, see `segflow.tablecmds`): `format` is
        one of the CLI's (coco, encord, youtube-vis, cvat, label-studio), `to` a file or a
        folder, local or `s3://` (the set too may be on S3), `options` the command's other
        flags as keywords (e.g. image_prefix=...).
        Returns the written file: a Path, or a UPath for an object store."""
        from segflow.tablecmds import run_export

        return as_path(run_export(self.out, format, os.fspath(to), **options))


def _local_input(item: LabeledInput) -> str:
    """A local file with the input's bytes, refusing one gone or changed since labeling."""
    from segflow.storage.keys import content_id

    path = as_path(item.source)
    if is_remote(path):
        from segflow.storage.fs import fetch

        path = fetch(path)
    if not Path(path).is_file():
        raise SegflowError(f"input {item.source}: no such file (frame images are read from the labeled input)")
    if content_id(path) != item.video_id:
        raise SegflowError(f"input {item.source}: changed since it was labeled (its frames no longer match the labels)")
    return str(path)


def _some(names, most: int = 5) -> str:
    """The first `most` names, and how many more."""
    names = list(names)
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def _to_8bit(im) -> "Image":
    """A 16-bit grayscale image as 8-bit RGB, scaled as the decode stage does."""
    from PIL import Image

    arr = np.asarray(im, dtype=np.float64)
    peak = 65535.0 if arr.max() > 255 else 255.0
    return Image.fromarray((arr * (255.0 / peak)).clip(0, 255).astype(np.uint8)).convert("RGB")


def _supervision() -> Any:
    try:
        import supervision
    except ImportError:
        raise ModuleNotFoundError("LabelSet.to_supervision needs supervision: pip install 'segflow[notebook]'") from None
    return supervision
