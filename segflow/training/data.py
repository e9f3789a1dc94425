"""Training data: COCO instance-segmentation JSON or segflow's own Parquet labels.

Both loaders produce the same thing: a ``torch.utils.data.Dataset`` whose items are
``(image, target)`` with ``image`` a float CHW tensor in [0, 1] and ``target`` the dict
torchvision's Mask R-CNN trains on (``boxes`` float (N, 4) x0y0x1y1, ``labels`` int64
(N,), ``masks`` uint8 (N, H, W)). Label ``i + 1`` is ``classes[i]``; 0 is background.

Frames come from videos (COCO ``images[].file_name`` = a video next to the JSON plus
``frame_index``; Parquet ``source`` + ``frame``) or from image files.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from segflow.errors import SegflowError

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}
COCO_GLOB = "*.coco.json"


# --------------------------------------------------------------------------- frames
class FrameReader:
    """Decode frames of videos and images, keeping one decord reader per video.

    With ``cache=True`` every decoded frame is kept in memory (uint8 RGB): training
    visits each frame many times, and random access into H.264 otherwise re-decodes
    from the previous keyframe on every visit.
    """

    def __init__(self, cache: bool = False, max_open: int = 8) -> None:
        self.cache = cache
        self.max_open = max_open
        self._readers: "OrderedDict[str, Any]" = OrderedDict()
        self._frames: dict[tuple[str, int], np.ndarray] = {}

    def _video(self, path: str):
        import decord  # local: slow import, and image-only datasets do not need it

        vr = self._readers.pop(path, None)
        if vr is None:
            vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
        self._readers[path] = vr  # most recently used last
        while len(self._readers) > self.max_open:
            self._readers.popitem(last=False)
        return vr

    def read(self, path: str, frame: int) -> np.ndarray:
        """Frame ``frame`` of ``path`` (0 for an image) as RGB uint8 (H, W, 3)."""
        key = (path, frame)
        if key in self._frames:
            return self._frames[key]
        if Path(path).suffix.lower() in VIDEO_SUFFIXES:
            arr = self._video(path)[frame].asnumpy()
        else:
            arr = read_image(path)
        if self.cache:
            self._frames[key] = arr
        return arr

    def preload(self, wanted: Iterable[tuple[str, int]]) -> None:
        """Decode many frames at once, one sorted ``get_batch`` per video (fast path)."""
        by_path: dict[str, set[int]] = {}
        for path, frame in wanted:
            if (path, frame) not in self._frames:
                by_path.setdefault(path, set()).add(frame)
        for path, frames in by_path.items():
            idx = sorted(frames)
            if Path(path).suffix.lower() in VIDEO_SUFFIXES:
                batch = self._video(path).get_batch(idx).asnumpy()
                for i, arr in zip(idx, batch):
                    self._frames[(path, i)] = arr
            else:
                self._frames[(path, 0)] = read_image(path)
        self.cache = True

    def __getstate__(self) -> dict:
        # decord readers cannot be pickled (DataLoader workers); reopen lazily.
        state = self.__dict__.copy()
        state["_readers"] = OrderedDict()
        return state


def read_image(path: str | Path) -> np.ndarray:
    """An image file as RGB uint8 (H, W, 3)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.array(im.convert("RGB"))  # a writable copy (torch.from_numpy needs one)


# --------------------------------------------------------------------------- samples
@dataclass(frozen=True)
class Sample:
    """One training frame: where its pixels are and its instances (not yet rasterized)."""

    source: str
    frame: int
    height: int
    width: int
    labels: tuple[int, ...]
    shapes: tuple[Any, ...]  # COCO segmentation objects or WKB bytes, one per label


def _coco_mask(segm: Any, height: int, width: int) -> np.ndarray:
    """A COCO segmentation (polygons, RLE or uncompressed RLE) as a uint8 (H, W) mask."""
    from pycocotools import mask as mask_utils

    # Same three cases as pycocotools.coco.COCO.annToRLE, without a COCO object.
    if isinstance(segm, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    elif isinstance(segm.get("counts"), list):
        rle = mask_utils.frPyObjects(segm, height, width)
    else:
        rle = segm
    return mask_utils.decode(rle).astype(np.uint8)


def wkb_mask(wkb: bytes, height: int, width: int) -> np.ndarray:
    """A WKB (Multi)Polygon in pixel-edge coordinates (a table's `geometry`) as a uint8
    (H, W) mask, drawn by `segflow.ops.raster.rasterize`: the pixels it was traced from."""
    import shapely

    from segflow.ops.raster import rasterize

    return rasterize(shapely.from_wkb(wkb), height, width).astype(np.uint8)


def _rasterize(sample: Sample) -> np.ndarray:
    """All instance masks of a sample as uint8 (N, H, W)."""
    h, w = sample.height, sample.width
    masks = [
        wkb_mask(s, h, w) if isinstance(s, (bytes, bytearray, memoryview)) else _coco_mask(s, h, w)
        for s in sample.shapes
    ]
    return np.stack(masks) if masks else np.zeros((0, h, w), np.uint8)


# --------------------------------------------------------------------------- discovery
def find_coco_files(paths: Sequence[str | Path]) -> list[Path]:
    """Expand ``paths`` (COCO JSON files or folders holding ``*.coco.json``) to files.

    Raises :class:`SegflowError` when a path is missing or a folder holds no COCO file.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.rglob(COCO_GLOB))
            if not found:
                raise SegflowError(f"--data {p}: folder holds no {COCO_GLOB} file")
            out += found
        elif p.is_file():
            out.append(p)
        else:
            raise SegflowError(f"--data {p}: no such file or folder")
    return out


def coco_classes(files: Sequence[str | Path]) -> list[str]:
    """Category names over COCO files, ordered by category id, first occurrence kept."""
    names: list[str] = []
    for f in files:
        cats = _read_json(Path(f)).get("categories", [])
        for c in sorted(cats, key=lambda c: c["id"]):
            if c["name"] not in names:
                names.append(c["name"])
    return names


def _read_json(path: Path) -> dict:
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError) as exc:
        raise SegflowError(f"--data {path}: not a readable COCO JSON ({exc})") from None


def _coco_samples(path: Path, class_index: dict[str, int], stride: int) -> tuple[list[Sample], int]:
    """Samples of one COCO file; returns them and the count of instances of unknown classes."""
    coco = _read_json(path)
    if "images" not in coco or "annotations" not in coco:
        raise SegflowError(f"--data {path}: not a COCO instance file (needs images and annotations)")
    cat_label = {c["id"]: class_index.get(c["name"]) for c in coco.get("categories", [])}
    anns: dict[int, list[dict]] = {}
    for a in coco["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    samples, dropped = [], 0
    images = sorted(coco["images"], key=lambda im: (im["file_name"], im.get("frame_index", 0)))
    for k, im in enumerate(images):
        if k % stride:
            continue
        labels, shapes = [], []
        for a in anns.get(im["id"], []):
            label = cat_label.get(a["category_id"])
            if label is None:
                dropped += 1
                continue
            if a.get("iscrowd", 0) or not a.get("segmentation"):
                continue  # crowd regions are not instances Mask R-CNN can learn
            labels.append(label)
            shapes.append(a["segmentation"])
        source = str((path.parent / im["file_name"]).resolve())
        samples.append(
            Sample(source, int(im.get("frame_index", 0)), int(im["height"]), int(im["width"]), tuple(labels), tuple(shapes))
        )
    return samples, dropped


def _parquet_samples(path: Path, class_index: dict[str, int]) -> tuple[list[Sample], int]:
    """Samples of one segflow Parquet table (a file or a folder of part files)."""
    import pyarrow.parquet as pq

    cols = ["source", "frame", "class_name", "geometry", "width", "height"]
    try:
        df = pq.read_table(path, columns=cols).to_pandas()
    except Exception as exc:
        raise SegflowError(f"--data {path}: not a segflow Parquet table ({exc})") from None
    samples, dropped = [], 0
    for (source, frame), g in df.groupby(["source", "frame"], sort=True):
        keep = g["class_name"].map(class_index)
        dropped += int(keep.isna().sum())
        g = g[keep.notna()]
        first = g.iloc[0] if len(g) else df[(df.source == source) & (df.frame == frame)].iloc[0]
        samples.append(
            Sample(
                str(source),
                int(frame),
                int(first["height"]),
                int(first["width"]),
                tuple(int(class_index[c]) for c in g["class_name"]),
                tuple(bytes(b) for b in g["geometry"]),
            )
        )
    return samples, dropped


# --------------------------------------------------------------------------- dataset
class SegDataset(Dataset):
    """Frames + instance targets for torchvision detection models.

    Build it with :meth:`from_coco` or :meth:`from_parquet`.

    * ``augment``: random horizontal flip and mild colour jitter
      (torchvision.transforms.v2, which moves the masks with the image).
    * ``scale_to``: ``(min_size, max_size)`` of the model; frames are resized here the
      way the model's transform would at inference, so training may skip its resize.
    * ``crop``: ``(h, w)`` random crop after scaling (cheaper steps on CPU; objects keep
      their inference-time pixel size).
    * ``min_area``: instances left with fewer pixels (e.g. cut by a crop) are dropped;
      it matches the synthetic ground truth's own cut-off.

    Boxes are always derived from the final masks, so they agree with them exactly.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        classes: Sequence[str],
        augment: bool = False,
        cache: bool = True,
        scale_to: tuple[int, int] | None = None,
        crop: tuple[int, int] | None = None,
        min_area: int = 30,
    ) -> None:
        if not samples:
            raise SegflowError("training data holds no frames")
        self.samples = list(samples)
        self.classes = tuple(classes)
        self.reader = FrameReader(cache=cache)
        self.augment = augment
        self.scale_to = scale_to
        self.crop = tuple(crop) if crop else None
        self.min_area = min_area
        self.transform: Callable | None = _augmentation(self.crop, augment) if (augment or self.crop) else None

    # -- constructors
    @classmethod
    def from_coco(
        cls,
        paths: Sequence[str | Path],
        classes: Sequence[str] | None = None,
        stride: int = 1,
        **kwargs: Any,
    ) -> "SegDataset":
        """Load COCO JSON files/folders; ``classes`` defaults to their categories.

        ``stride`` keeps every n-th image of each file (neighbouring video frames are
        near-duplicates). Instances of categories outside ``classes`` are dropped.
        Other keyword arguments go to the constructor.
        """
        files = find_coco_files(paths)
        classes = list(classes) if classes is not None else coco_classes(files)
        index = {c: i + 1 for i, c in enumerate(classes)}
        samples, dropped = [], 0
        for f in files:
            s, d = _coco_samples(f, index, max(1, int(stride)))
            samples += s
            dropped += d
        if dropped:
            log.warning("dropped %d instances whose class is not in %s", dropped, classes)
        return cls(samples, classes, **kwargs)

    @classmethod
    def from_parquet(cls, paths: Sequence[str | Path], classes: Sequence[str], **kwargs: Any) -> "SegDataset":
        """Load segflow output tables (corrected labels feeding the next model)."""
        index = {c: i + 1 for i, c in enumerate(classes)}
        samples, dropped = [], 0
        for p in map(Path, paths):
            s, d = _parquet_samples(p, index)
            samples += s
            dropped += d
        if dropped:
            log.warning("dropped %d instances whose class is not in %s", dropped, list(classes))
        return cls(samples, classes, **kwargs)

    # -- Dataset protocol
    def __len__(self) -> int:
        return len(self.samples)

    def preload(self) -> None:
        """Decode every frame now (sorted per video) and keep them in memory."""
        self.reader.preload((s.source, s.frame) for s in self.samples)

    def instance_count(self) -> int:
        """Number of instances over all samples."""
        return sum(len(s.labels) for s in self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from torchvision import tv_tensors
        from torchvision.transforms.v2 import functional as TF

        s = self.samples[i]
        try:
            frame = self.reader.read(s.source, s.frame)
        except Exception as exc:
            raise SegflowError(f"cannot decode frame {s.frame} of {s.source} ({exc})") from None
        image = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1))
        masks = tv_tensors.Mask(torch.from_numpy(_rasterize(s)))
        if self.scale_to is not None:
            size = scaled_size(image.shape[-2:], *self.scale_to)
            if size != tuple(image.shape[-2:]):
                image, masks = TF.resize(image, list(size), antialias=True), TF.resize(masks, list(size))
        if self.transform is not None:
            image, masks = self.transform(image, masks)
        return make_target(image, masks, s.labels, self.min_area)


def scaled_size(hw: Sequence[int], min_size: int, max_size: int) -> tuple[int, int]:
    """Frame size after torchvision's GeneralizedRCNNTransform resize (min/max side rule)."""
    h, w = int(hw[0]), int(hw[1])
    scale = min(min_size / min(h, w), max_size / max(h, w))
    return (h, w) if scale == 1 else (int(h * scale), int(w * scale))


def make_target(image: torch.Tensor, masks: torch.Tensor, labels: Sequence[int], min_area: int = 0) -> tuple[torch.Tensor, dict]:
    """(uint8 CHW image, (N, H, W) masks, labels) -> (float image in [0, 1], torchvision target).

    Boxes come from the masks (pixel extents, exclusive max); instances with fewer than
    ``max(1, min_area)`` pixels are dropped.
    """
    from torchvision.ops import masks_to_boxes

    h, w = image.shape[-2:]
    m = masks.as_subclass(torch.Tensor).to(torch.uint8).reshape(-1, h, w)
    lab = torch.as_tensor(list(labels), dtype=torch.int64)
    keep = m.flatten(1).sum(1) >= max(1, min_area)
    m, lab = m[keep], lab[keep]
    boxes = masks_to_boxes(m) + torch.tensor([0.0, 0.0, 1.0, 1.0]) if len(m) else torch.zeros((0, 4))
    img = image.as_subclass(torch.Tensor).float().div_(255.0)
    return img, {"boxes": boxes, "labels": lab, "masks": m}


def _augmentation(crop: tuple[int, int] | None, augment: bool) -> Callable:
    """Optional random crop, then (``augment``) horizontal flip and mild colour jitter."""
    from torchvision.transforms import v2

    ops: list = [v2.RandomCrop(list(crop), pad_if_needed=True)] if crop else []
    ops += [] if not augment else [
        v2.RandomHorizontalFlip(p=0.5),
        v2.RandomApply([v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02)], p=0.8),
    ]
    return v2.Compose(ops)


def collate(batch: list[tuple[torch.Tensor, dict]]) -> tuple[list[torch.Tensor], list[dict]]:
    """Detection collate: keep images and targets as lists (sizes may differ)."""
    return [b[0] for b in batch], [b[1] for b in batch]
