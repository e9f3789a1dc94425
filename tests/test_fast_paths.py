"""Fast paths give exactly what the straightforward code gives: the segment stage's CPU
path (batched transform, box-local mask pasting, RLEs counted on the box) vs
torchvision's forward + full-frame pasting + pycocotools.encode, and polygonize's
cropped tracing vs tracing the whole frame."""

from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch

from segflow.models import fast_forward, inference
from segflow.contracts import FrameBatch


def _batch(h: int, w: int, n: int = 2) -> FrameBatch:
    from segflow.synth import generate

    frames = np.stack([f.image for f in generate(7, n, (h, w))])
    return FrameBatch(frames, np.arange(n, dtype=np.int64), np.arange(n) / 25.0)


@pytest.mark.parametrize("size", [(480, 640), (240, 320)], ids=["no-resize", "resized"])
def test_fast_path_is_bit_identical(size, monkeypatch):
    from segflow.models.arch import build_model

    torch.manual_seed(0)
    model = build_model("maskrcnn_small", 5).eval()  # random weights: many masks of every size
    batch = _batch(*size)
    cpu = torch.device("cpu")
    assert fast_forward.local_masks_supported(model)
    fast, n_fast = inference.segment_batches(model, [batch], cpu)
    monkeypatch.setattr(inference, "local_masks_supported", lambda *a: False)
    stock, n_stock = inference.segment_batches(model, [batch], cpu)
    assert n_fast == n_stock == len(batch.indices) and len(fast) == len(stock) > 0
    assert fast.rles == stock.rles
    for name in ("frame", "timestamp", "label", "score", "boxes"):
        assert np.array_equal(getattr(fast, name), getattr(stock, name)), name


def test_overlapped_encoding_gives_the_same_detections():
    """The GPU path encodes each batch in a helper thread while the next one runs."""
    from segflow.models.arch import build_model

    torch.manual_seed(0)
    model = build_model("maskrcnn_small", 5).eval()
    batches = [_batch(240, 320)] * 3
    inline, n_inline = inference.segment_batches(model, batches, torch.device("cpu"), overlap=False)
    overlapped, n_overlapped = inference.segment_batches(model, batches, torch.device("cpu"), overlap=True)
    assert n_inline == n_overlapped == 3 * len(batches[0].indices) and len(inline) > 0
    assert overlapped.rles == inline.rles
    for name in ("frame", "label", "score", "boxes"):
        assert np.array_equal(getattr(overlapped, name), getattr(inline, name)), name


def test_region_counts_match_pycocotools():
    rng = np.random.default_rng(0)
    h, w = 23, 31
    for _ in range(500):
        rh, rw = rng.integers(1, h + 1), rng.integers(1, w + 1)
        y0, x0 = rng.integers(0, h - rh + 1), rng.integers(0, w - rw + 1)
        region = rng.random((rh, rw)) < rng.choice([0.02, 0.5, 1.0])
        if not region.any():
            continue
        full = np.zeros((h, w), np.uint8, order="F")
        full[y0 : y0 + rh, x0 : x0 + rw] = region
        counts = fast_forward.region_rle_counts(region, y0, x0, h, w)
        assert mask_utils.frPyObjects([{"size": [h, w], "counts": counts}], h, w)[0] == mask_utils.encode(full)


def test_cropped_tracing_matches_the_whole_frame():
    import cv2

    from segflow.ops.outline import crop_mask
    from segflow.ops.rle import rle_crops

    rng = np.random.default_rng(1)
    h, w = 40, 52
    yy, xx = np.mgrid[:h, :w]
    crops, rles = [], []
    for _ in range(300):
        mask = np.zeros((h, w), bool)
        for _ in range(rng.integers(1, 4)):  # blobs, some cut by the frame edge, some with holes
            cy, cx, r = rng.integers(-4, h + 4), rng.integers(-4, w + 4), rng.integers(1, 12)
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        mask ^= rng.random((h, w)) < 0.03
        crop, offset = crop_mask(mask)
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        crop2, offset2 = rle_crops([rle])[0]
        assert offset == offset2 and np.array_equal(crop, crop2)
        crops.append((crop, offset))
        rles.append(rle)
        full, hier = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        part, hier2 = cv2.findContours(crop, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE, offset=offset)
        assert len(full) == len(part) and all(np.array_equal(a, b) for a, b in zip(full, part))
        assert (hier is None and hier2 is None) or np.array_equal(hier, hier2)
    empty = np.zeros((h, w), np.uint8)
    crops.insert(5, crop_mask(empty))
    rles.insert(5, mask_utils.encode(np.asfortranarray(empty)))
    together = rle_crops(rles)  # one batch decodes each mask as alone
    assert all(o == o2 and np.array_equal(c, c2) for (c, o), (c2, o2) in zip(crops, together))
