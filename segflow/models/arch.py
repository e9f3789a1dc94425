"""Model architectures segflow can build, train and load.

Every architecture is a stock ``torchvision.models.detection.MaskRCNN`` so the label
pipeline treats them all alike; they differ only in backbone and head sizes.

* ``maskrcnn_r50_fpn`` / ``maskrcnn_r50_fpn_v2``: torchvision's ResNet-50 FPN models,
  built without weights (COCO weights are applied by the training flow when cached).
* ``maskrcnn_small``: a slim from-scratch ResNet-ish body + 64-channel FPN, sized for
  objects of roughly 20-150 px on 480x640 frames and for fast CPU inference.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Sequence

import torch
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection import maskrcnn_resnet50_fpn, maskrcnn_resnet50_fpn_v2
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.resnet import BasicBlock
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from segflow.errors import SegflowError

ARCHS: tuple[str, ...] = ("maskrcnn_r50_fpn", "maskrcnn_r50_fpn_v2", "maskrcnn_small")

# Defaults of the small model. They are JSON-able so a checkpoint can record them and
# rebuild the exact same module graph (see CheckpointMeta.arch_kwargs).
SMALL_DEFAULTS: dict[str, Any] = {
    "widths": [32, 48, 96, 128],  # channels of the stride-4/8/16/32 stages
    "depths": [1, 1, 2, 1],  # BasicBlocks per stage
    "fpn_channels": 64,
    # Two sizes per pyramid level (stride 8/16/32/64) cover objects of ~16-200 px.
    "anchor_sizes": [[16, 24], [32, 48], [64, 96], [128, 192]],
    "aspect_ratios": [0.5, 1.0, 2.0],
    "min_size": 480,  # a 480x640 frame is used at its native size (no resize cost)
    "max_size": 640,
    "representation_size": 256,
    "mask_layers": [64, 64],
}

# MaskRCNN keyword arguments tuned for a fast CPU forward pass; they carry no weights,
# so callers may override them freely (also through arch_kwargs).
SMALL_RCNN_DEFAULTS: dict[str, Any] = {
    "rpn_pre_nms_top_n_train": 1000,
    "rpn_post_nms_top_n_train": 500,
    "rpn_pre_nms_top_n_test": 300,
    "rpn_post_nms_top_n_test": 100,
    "rpn_batch_size_per_image": 256,
    "box_batch_size_per_image": 128,
    "box_detections_per_img": 50,
    "box_score_thresh": 0.05,
}


def _stage(in_ch: int, out_ch: int, depth: int, stride: int) -> nn.Sequential:
    """A ResNet stage of ``depth`` BasicBlocks; the first one changes stride/width."""
    downsample = None
    if stride != 1 or in_ch != out_ch:
        downsample = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
        )
    blocks = [BasicBlock(in_ch, out_ch, stride=stride, downsample=downsample)]
    blocks += [BasicBlock(out_ch, out_ch) for _ in range(depth - 1)]
    return nn.Sequential(*blocks)


def _small_body(widths: Sequence[int], depths: Sequence[int]) -> nn.Sequential:
    """The from-scratch body: a stride-4 stem then four stages at strides 4, 8, 16, 32."""
    if len(widths) != 4 or len(depths) != 4:
        raise SegflowError("maskrcnn_small: widths and depths need 4 entries each")
    stem_ch = widths[0]
    layers: "OrderedDict[str, nn.Module]" = OrderedDict(
        stem=nn.Sequential(
            nn.Conv2d(3, stem_ch, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(stem_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(stem_ch, stem_ch, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(stem_ch),
            nn.ReLU(inplace=True),
        )
    )
    in_ch = stem_ch
    for i, (w, d) in enumerate(zip(widths, depths)):
        layers[f"layer{i + 1}"] = _stage(in_ch, w, d, stride=1 if i == 0 else 2)
        in_ch = w
    return nn.Sequential(layers)


def _build_small(num_classes: int, **kwargs: Any) -> MaskRCNN:
    """Build ``maskrcnn_small``; unknown kwargs go to ``MaskRCNN`` itself."""
    cfg = {**SMALL_DEFAULTS, **{k: v for k, v in kwargs.items() if k in SMALL_DEFAULTS}}
    rcnn_kwargs = {**SMALL_RCNN_DEFAULTS, **{k: v for k, v in kwargs.items() if k not in SMALL_DEFAULTS}}
    widths = list(cfg["widths"])
    fpn_ch = int(cfg["fpn_channels"])

    body = _small_body(widths, list(cfg["depths"]))
    # Pyramid from strides 8/16/32 (+ max-pooled 64): 20 px objects are still ~3 cells
    # wide at stride 8, and skipping stride 4 keeps the FPN, RPN and RoIAlign cheap.
    backbone = BackboneWithFPN(
        body,
        return_layers={"layer2": "0", "layer3": "1", "layer4": "2"},
        in_channels_list=widths[1:],
        out_channels=fpn_ch,
        extra_blocks=LastLevelMaxPool(),
    )
    sizes = tuple(tuple(int(s) for s in level) for level in cfg["anchor_sizes"])
    ratios = (tuple(float(r) for r in cfg["aspect_ratios"]),) * len(sizes)
    anchors = AnchorGenerator(sizes=sizes, aspect_ratios=ratios)
    rpn_head = RPNHead(fpn_ch, anchors.num_anchors_per_location()[0])

    rep = int(cfg["representation_size"])
    box_pool = MultiScaleRoIAlign(featmap_names=["0", "1", "2"], output_size=7, sampling_ratio=2)
    mask_pool = MultiScaleRoIAlign(featmap_names=["0", "1", "2"], output_size=14, sampling_ratio=2)
    mask_layers = [int(c) for c in cfg["mask_layers"]]

    return MaskRCNN(
        backbone,
        num_classes=None,  # predictors are given explicitly below
        min_size=int(cfg["min_size"]),
        max_size=int(cfg["max_size"]),
        rpn_anchor_generator=anchors,
        rpn_head=rpn_head,
        box_roi_pool=box_pool,
        box_head=TwoMLPHead(fpn_ch * 7 * 7, rep),
        box_predictor=FastRCNNPredictor(rep, num_classes),
        mask_roi_pool=mask_pool,
        mask_head=MaskRCNNHeads(fpn_ch, mask_layers, dilation=1),
        mask_predictor=MaskRCNNPredictor(mask_layers[-1], mask_layers[-1], num_classes),
        **rcnn_kwargs,
    )


def build_model(arch: str, num_classes: int, **arch_kwargs: Any) -> MaskRCNN:
    """Build an untrained Mask R-CNN of the named architecture.

    ``num_classes`` counts the background (``len(classes) + 1``). ``arch_kwargs`` must be
    JSON-able; they are stored in checkpoints so the same graph can be rebuilt.
    Raises :class:`SegflowError` for an unknown arch or a bad class count.
    """
    if arch not in ARCHS:
        raise SegflowError(f"unknown model architecture {arch!r}; choose one of: {', '.join(ARCHS)}")
    if not isinstance(num_classes, int) or num_classes < 2:
        raise SegflowError(f"num_classes must be an int >= 2 (classes + background), got {num_classes!r}")
    try:
        if arch == "maskrcnn_r50_fpn":
            return maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=num_classes, **arch_kwargs)
        if arch == "maskrcnn_r50_fpn_v2":
            return maskrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None, num_classes=num_classes, **arch_kwargs)
        return _build_small(num_classes, **arch_kwargs)
    except TypeError as exc:  # an unknown keyword in arch_kwargs
        raise SegflowError(f"bad arch_kwargs for {arch}: {exc}") from exc


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters of ``model`` (for logs and the training record)."""
    return sum(p.numel() for p in model.parameters())
