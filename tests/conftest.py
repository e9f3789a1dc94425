"""Shared fixtures: one Prefect test server per session, test clips, a counting model."""

from __future__ import annotations

import hashlib
import inspect
import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no network here

from segflow.models import registry  # noqa: E402
from tests import clips  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
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
        speck = np.zeros((h, w), bool)
        speck[5:15, 5:15] = True
        out_masks.append(speck), labels.append(2), out_scores.append(0.3)
        m = torch.from_numpy(np.stack(out_masks)).float()
        boxes = torch.stack([_box(mm) for mm in m])
        return {"boxes": boxes, "labels": torch.tensor(labels), "scores": torch.tensor(out_scores), "masks": m[:, None]}


def _box(mask: torch.Tensor) -> torch.Tensor:
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()


def _color_ref() -> registry.ModelRef:
    digest = hashlib.sha256(inspect.getsource(ColorModel).encode()).hexdigest()
    return registry.ModelRef("test-color", CLASSES, digest, lambda device: ColorModel())


registry.register("test-color", _color_ref)


@pytest.fixture(autouse=True, scope="session")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    from prefect import flow

    with prefect_test_harness(server_startup_timeout=90):
        # Run one flow now so Prefect's console log handler binds to the session's
        # stderr, not to a capsys stream that a later test closes.
        flow(lambda: None, name="warm-up")()
        yield


@pytest.fixture
def model_calls():
    """Reset and read ColorModel's forward-call counter."""
    ColorModel.calls = 0
    return lambda: ColorModel.calls


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clips") / "shapes.mp4"
    return clips.write_mp4(path, clips.render(n_frames=12))


@pytest.fixture(scope="session")
def image(tmp_path_factory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("images") / "still.png"
    Image.fromarray(clips.render(n_frames=1)[0]).save(path)
    return path
