"""torchvision's Mask R-CNN forward without pasting masks into full frames.

torchvision's `transform.postprocess` pastes every detection's M x M mask into a zeroed
float image of the whole frame, which the caller then thresholds and copies again to
encode RLEs (and, on a GPU, copies N x H x W back to the CPU). Here each mask is resized
exactly as `paste_mask_in_image` does, thresholded inside its box only, and its RLE runs
counted over the box's columns: bit-identical RLEs for a fraction of the work (figures in
bench/RESULTS.md). The input transform is done on the whole batch at once when it would
not resize anything. Models other than a stock eval-mode torchvision Mask R-CNN are not
supported here (`local_masks_supported`); callers run `model(images)` for those.

Pure torch/numpy: no Prefect, no disk, no stage imports.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pycocotools.mask as mask_utils
import torch
import torch.nn.functional as F

MASK_THRESHOLD = 0.5  # torchvision's convention for binarizing mask probabilities


def to_tensors(frames: np.ndarray, device: torch.device) -> list[torch.Tensor]:
    """RGB uint8 (N, H, W, 3) -> list of float CHW tensors in [0, 1] on `device`."""
    batch = torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float().div_(255.0)
    return list(batch.unbind(0))


def encode_masks(masks: np.ndarray) -> list[dict]:
    """Bool (N, H, W) -> COCO RLEs via pycocotools."""
    if len(masks) == 0:
        return []
    return mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))


def local_masks_supported(model: torch.nn.Module) -> bool:
    """Whether `model` is a stock torchvision Mask R-CNN in eval mode.

    Anything else (a custom forward or transform, hooks on the model, keypoints) runs
    through `model(images)` as before.
    """
    from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    if not isinstance(model, GeneralizedRCNN) or model.training:
        return False
    if type(model).forward is not GeneralizedRCNN.forward or model._forward_hooks or model._forward_pre_hooks:
        return False
    if type(model.transform) is not GeneralizedRCNNTransform or model.transform._forward_hooks:
        return False
    heads = model.roi_heads
    return bool(heads.has_mask()) and not heads.has_keypoint()


def forward_unpasted(model: torch.nn.Module, images: list[torch.Tensor]) -> tuple[list[dict], list[tuple[int, int]]]:
    """`GeneralizedRCNN.forward` in eval mode, stopping before the masks are pasted.

    Boxes are rescaled to the input size as `transform.postprocess` does; `masks` stay
    (N, 1, M, M) probabilities. Returns the detections and each image's (H, W).
    """
    sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
    image_list, _ = model.transform(images, None)
    return _forward_transformed(model, image_list, sizes), sizes


def normalized_batch(model: torch.nn.Module, frames: np.ndarray, device: torch.device):
    """`model.transform` of the frames as one normalized (N, 3, H, W) batch, or None.

    When the transform would not resize (its scale is exactly 1, as for 480x640 frames
    and `maskrcnn_small`) and the frames need no padding, the transform only
    normalizes, resizes by 1 (an exact copy) and copies each image into the batch;
    this computes the same values, (x / 255 - mean) / std per element, on one
    contiguous batch. Anything else returns None (use `model.transform`).
    """
    from torchvision.models.detection.image_list import ImageList

    tf = model.transform
    n, h, w, c = frames.shape
    if tf.training or tf.fixed_size is not None or c != 3 or h % tf.size_divisible or w % tf.size_divisible:
        return None
    if min(float(tf.min_size[-1]) / min(h, w), float(tf.max_size) / max(h, w)) != 1.0:
        return None
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).contiguous()
    x = x.float().div_(255.0)
    mean = torch.as_tensor(tf.image_mean, dtype=x.dtype, device=x.device)[None, :, None, None]
    std = torch.as_tensor(tf.image_std, dtype=x.dtype, device=x.device)[None, :, None, None]
    return ImageList(x.sub_(mean).div_(std), [(h, w)] * n)


def forward_frames(model: torch.nn.Module, frames: np.ndarray, device: torch.device) -> tuple[list[dict], list[tuple[int, int]]]:
    """`forward_unpasted(model, to_tensors(frames, device))`, with the transform done on
    the whole batch at once when `normalized_batch` allows it (same values)."""
    image_list = normalized_batch(model, frames, device)
    if image_list is None:
        return forward_unpasted(model, to_tensors(frames, device))
    sizes = [(int(frames.shape[1]), int(frames.shape[2]))] * len(frames)
    return _forward_transformed(model, image_list, sizes), sizes


def _forward_transformed(model: torch.nn.Module, image_list, sizes: list[tuple[int, int]]) -> list[dict]:
    from torchvision.models.detection.transform import resize_boxes

    features = model.backbone(image_list.tensors)
    if isinstance(features, torch.Tensor):
        features = OrderedDict([("0", features)])
    proposals, _ = model.rpn(image_list, features, None)
    detections, _ = model.roi_heads(features, proposals, image_list.image_sizes, None)
    for pred, im_s, o_im_s in zip(detections, image_list.image_sizes, sizes):
        pred["boxes"] = resize_boxes(pred["boxes"], im_s, o_im_s)
    return detections


def local_mask_rles(masks: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> tuple[list[dict], np.ndarray]:
    """RLEs of (N, 1, M, M) mask probabilities pasted into their boxes, thresholded.

    Follows torchvision's `paste_masks_in_image` step for step (pad by 1, expand the
    box, bilinear resize to the integer box, clip to the image) on each box only.
    Returns the RLEs of the non-empty masks and the positions of those masks.
    """
    from torchvision.models.detection.roi_heads import expand_boxes, expand_masks

    n = len(masks)
    if n == 0:
        return [], np.zeros(0, np.int64)
    im_h, im_w = size
    padded, scale = expand_masks(masks, padding=1)
    ints = expand_boxes(boxes, scale).to(dtype=torch.int64).tolist()
    counts, keep = [], []
    for i, (mask, (b0, b1, b2, b3)) in enumerate(zip(padded, ints)):
        w = max(int(b2 - b0 + 1), 1)
        h = max(int(b3 - b1 + 1), 1)
        resized = F.interpolate(mask[0].expand((1, 1, -1, -1)), size=(h, w), mode="bilinear", align_corners=False)[0][0]
        x_0, x_1 = max(b0, 0), min(b2 + 1, im_w)
        y_0, y_1 = max(b1, 0), min(b3 + 1, im_h)
        region = (resized[(y_0 - b1) : (y_1 - b1), (x_0 - b0) : (x_1 - b0)] >= MASK_THRESHOLD).numpy()
        if region.size and region.any():
            counts.append({"size": [im_h, im_w], "counts": region_rle_counts(region, y_0, x_0, im_h, im_w)})
            keep.append(i)
    if not keep:
        return [], np.zeros(0, np.int64)
    return mask_utils.frPyObjects(counts, im_h, im_w), np.asarray(keep, np.int64)


def region_rle_counts(region: np.ndarray, y0: int, x0: int, im_h: int, im_w: int) -> list[int]:
    """Uncompressed COCO RLE counts of an (im_h, im_w) mask that is zero outside `region`
    placed at (y0, x0): what `mask_utils.encode` counts on the full mask, column-major,
    zeros first, computed on the box's columns only (pycocotools then compresses them
    exactly as `encode` does)."""
    rh, rw = region.shape
    cols = np.zeros((rw, im_h), np.int8)  # one row per image column of the box
    cols[:, y0 : y0 + rh] = region.T
    flat = cols.ravel()
    starts = np.concatenate(([0], np.flatnonzero(flat[1:] != flat[:-1]) + 1))
    lengths = np.diff(np.append(starts, flat.size))
    runs = lengths.tolist()
    first_one = bool(flat[0])
    lead, trail = x0 * im_h, (im_w - x0 - rw) * im_h
    # zeros of the columns left of the box join the first run (or start the counts)
    if first_one:
        runs.insert(0, lead)
    else:
        runs[0] += lead
    # zeros right of the box join the last run when it is zeros, else follow it
    if (len(runs) % 2) == 1:  # the last run counts zeros
        runs[-1] += trail
    elif trail:
        runs.append(trail)
    return runs


def outputs_to_cpu(outputs: list[dict]) -> list[dict]:
    """Detection outputs as float32/int64 CPU tensors (no copy when they are already)."""
    return [{k: (v.float() if v.is_floating_point() else v).cpu() for k, v in out.items()} for out in outputs]
