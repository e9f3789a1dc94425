"""A deterministic stand-in for Mask R-CNN, registered as the model "test-color".

Importing this module registers it; subprocesses get it with
`SEGFLOW_PLUGINS=tests.color_model` (and the repo root on PYTHONPATH).
"""

from __future__ import annotations

import hashlib
import inspect
import os
import time

import numpy as np
import torch

from segflow.models import registry

CLASSES = ("circle", "square", "ring")


class ColorModel(torch.nn.Module):
    """A deterministic stand-in for Mask R-CNN: one instance per class color.

    It also emits a near-duplicate of the circle (lower score) so NMS has work, and a
    low-score square-class speck so the confidence threshold has work. `calls` counts
    forward passes so tests can prove reruns never run the model.
    """

    calls = 0

    def forward(self, images: list[torch.Tensor]) -> list[dict]:
        type(self).calls += 1
        time.sleep(float(os.environ.get("SEGFLOW_TEST_MODEL_DELAY", "0")))  # lets chaos tests kill mid-range
        return [self._one(img) for img in images]

    def _one(self, img: torch.Tensor) -> dict:
        x = (img * 255).permute(1, 2, 0).cpu().numpy().astype(np.int16)
        r, g, b = x[..., 0], x[..., 1], x[..., 2]
        masks = {
            1: (r > 170) & (g < 100) & (b < 100),
            2: (g > 150) & (r < 100) & (b < 110),
            3: (b > 170) & (r < 110) & (g < 130),
        }
        scores = {1: 0.95, 2: 0.85, 3: 0.75}
        out_masks, labels, out_scores = [], [], []
        for label, m in masks.items():
            if m.sum() < 20:
                continue
            out_masks.append(m), labels.append(label), out_scores.append(scores[label])
            if label == 1:  # a shifted duplicate: IoU with the circle ~0.8
                out_masks.append(np.roll(m, 2, axis=1)), labels.append(1), out_scores.append(0.65)
        h, w = x.shape[:2]
        if h >= 20 and w >= 20:
            speck = np.zeros((h, w), bool)
            speck[5:15, 5:15] = True
            out_masks.append(speck), labels.append(2), out_scores.append(0.3)
        if not out_masks:
            return {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
                    "scores": torch.zeros(0), "masks": torch.zeros(0, 1, h, w)}
        m = torch.from_numpy(np.stack(out_masks)).float()
        boxes = torch.stack([_box(mm) for mm in m])
        return {"boxes": boxes, "labels": torch.tensor(labels), "scores": torch.tensor(out_scores), "masks": m[:, None]}


def _box(mask: torch.Tensor) -> torch.Tensor:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()


def _red(img: torch.Tensor) -> np.ndarray:
    """(H, W) bool: the circle's pixels, as ColorModel finds class 1 in a (3, H, W) image."""
    x = (img * 255).permute(1, 2, 0).cpu().numpy().astype(np.int16)
    return (x[..., 0] > 170) & (x[..., 1] < 100) & (x[..., 2] < 100)


def _register(name: str, cls: type[ColorModel]) -> None:
    """Register `cls` as model `name`; its digest is the source of ColorModel and of each subclass down to `cls`."""
    source = "".join(inspect.getsource(c) for c in reversed(cls.__mro__) if issubclass(c, ColorModel))
    digest = hashlib.sha256(source.encode()).hexdigest()
    registry.register(name, lambda: registry.ModelRef(name, CLASSES, digest, lambda device: cls()))


_register("test-color", ColorModel)


class FlickerModel(ColorModel):
    """ColorModel that calls the square a ring (score 0.8) while the circle is left of
    x = 60 (frames 0-2 of `clips.render`): a model that changes an object's class on a
    few frames, so the class vote over the whole track has work across frame ranges."""

    def _one(self, img: torch.Tensor) -> dict:
        out = super()._one(img)
        red = _red(img)
        if red.sum() >= 20 and np.nonzero(red)[1].mean() < 60:
            flip = (out["labels"] == 2) & (out["scores"] > 0.5)
            out["labels"] = torch.where(flip, torch.tensor(3), out["labels"])
            out["scores"] = torch.where(flip, torch.tensor(0.8), out["scores"])
        return out


_register("test-flicker", FlickerModel)


class BlinkModel(ColorModel):
    """ColorModel that also sees a spurious 20 x 20 ring (score 0.9) at the bottom left on
    the two frames where the circle's centre is at x 68-79 (frames 5 and 6 of
    `clips.render`): a blink of a model, an object of two frames in mid-video."""

    def _one(self, img: torch.Tensor) -> dict:
        out = super()._one(img)
        red = _red(img)
        h, w = red.shape
        if red.sum() >= 20 and 67 <= np.nonzero(red)[1].mean() < 79:
            m = torch.zeros(1, 1, h, w)
            m[..., h - 30:h - 10, 10:30] = 1.0
            out = {"boxes": torch.cat([out["boxes"], torch.tensor([[10.0, h - 30.0, 30.0, h - 10.0]])]),
                   "labels": torch.cat([out["labels"], torch.tensor([3])]),
                   "scores": torch.cat([out["scores"], torch.tensor([0.9])]),
                   "masks": torch.cat([out["masks"], m])}
        return out


_register("test-blink", BlinkModel)
