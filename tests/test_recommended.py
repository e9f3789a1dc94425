"""Recommended settings from a model's checkpoint metadata apply unless the user sets them."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from segflow.errors import SegflowError
from segflow.job import prepare_job
from segflow.settings import make_settings


def test_bundled_model_recommends_class_agnostic_nms(clip, tmp_path):
    job = prepare_job([str(clip)], str(tmp_path / "a"), make_settings(model="shapes-demo"))
    assert job.settings.class_agnostic_nms is True
    assert job.settings.class_penalty == 0.05  # the tracker follows the NMS mode
    given = prepare_job([str(clip)], str(tmp_path / "b"), make_settings(model="shapes-demo", class_agnostic_nms=False))
    assert given.settings.class_agnostic_nms is False  # the user's setting wins
    assert given.params_hash != job.params_hash


def test_model_without_recommendation_keeps_per_class_nms(clip, tmp_path):
    job = prepare_job([str(clip)], str(tmp_path / "a"), make_settings(model="test-color"))
    assert job.settings.class_agnostic_nms is False


def test_checkpoint_metadata_recommendation(clip, tmp_path):
    """A checkpoint written with `recommended` in its safetensors metadata is read back."""
    from segflow.models.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint

    model, meta = load_checkpoint(_bundled_path())
    for value, expected in ((True, True), (False, False)):
        path = tmp_path / f"m{value}.safetensors"
        save_checkpoint(path, model, CheckpointMeta(meta.arch, meta.classes, meta.arch_kwargs,
                                                    recommended={"class_agnostic_nms": value}))
        job = prepare_job([str(clip)], str(tmp_path / f"o{value}"), make_settings(model=str(path)))
        assert job.settings.class_agnostic_nms is expected
    bad = tmp_path / "bad.safetensors"
    save_checkpoint(bad, model, CheckpointMeta(meta.arch, meta.classes, meta.arch_kwargs,
                                               recommended={"class_agnostic_nms": "sometimes"}))
    with pytest.raises(SegflowError, match="recommended settings are invalid"):
        prepare_job([str(clip)], str(tmp_path / "bad"), make_settings(model=str(bad)))


def _bundled_path():
    from importlib import resources

    return str(resources.files("segflow") / "assets" / "shapes-demo.safetensors")


def test_help_and_readme_say_so():
    from segflow.cli import cli
    from tests.conftest import REPO

    text = " ".join(CliRunner().invoke(cli, ["label", "--help"]).output.split())
    assert "--class-agnostic-nms / --per-class-nms" in text
    assert "recommended" in text and "shapes-demo" in text
    readme = (REPO / "README.md").read_text()
    assert "recommended settings" in readme.lower() and "--per-class-nms" in readme
    sidecar = json.loads((REPO / "segflow" / "assets" / "shapes-demo.json").read_text())
    assert sidecar["recommended"] == {"class_agnostic_nms": True}
