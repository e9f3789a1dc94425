"""The model process (models/worker.py): same output as in-process, falls back, recovers."""

from __future__ import annotations

import os
import signal

import numpy as np
import pandas as pd
import pytest
import torch

from segflow.models import worker
from segflow.models.registry import load_model, resolve_model
from segflow.contracts import FrameRange
from segflow.media import probe
from segflow.models.runner import segment_range

CPU = torch.device("cpu")


@pytest.fixture(scope="module", autouse=True)
def stop_workers():
    yield
    worker.shutdown()


def test_wanted_on_a_gpu_only_unless_asked(monkeypatch):
    monkeypatch.delenv("SEGFLOW_MODEL_PROCESS", raising=False)
    assert worker.wanted(torch.device("cuda")) and not worker.wanted(CPU)
    monkeypatch.setenv("SEGFLOW_MODEL_PROCESS", "1")
    assert worker.wanted(CPU)
    monkeypatch.setenv("SEGFLOW_MODEL_PROCESS", "0")
    assert not worker.wanted(torch.device("cuda"))


def test_worker_gives_the_in_process_detections(clip):
    video, rng = probe(clip), FrameRange(2, 9)
    ref = resolve_model("shapes-demo")
    here, n_here = segment_range(load_model(ref, CPU), video, rng, CPU, 4, 0.05)
    there, n_there = worker.segment_in_worker("shapes-demo", ref.digest, CPU, video, rng, 4, 0.05, False)
    assert n_here == n_there == 8 and len(there.score) == len(here.score) > 0
    assert np.array_equal(there.frame, here.frame) and there.rles == here.rles
    assert np.allclose(there.score, here.score, atol=1e-5) and np.allclose(there.boxes, here.boxes, atol=1e-3)


def test_changed_weights_are_refused(clip):
    with pytest.raises(Exception, match="weights changed"):
        worker.segment_in_worker("shapes-demo", "0" * 64, CPU, probe(clip), FrameRange(0, 1), 2, 0.05, False)


def test_a_dead_worker_fails_its_range_and_is_replaced(clip):
    video, digest = probe(clip), resolve_model("shapes-demo").digest
    worker.segment_in_worker("shapes-demo", digest, CPU, video, FrameRange(0, 1), 2, 0.05, False)
    (pid,) = worker._pool("cpu")._processes  # the one live worker
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(RuntimeError, match="model process .* died"):
        worker.segment_in_worker("shapes-demo", digest, CPU, video, FrameRange(0, 1), 2, 0.05, False)
    det, n = worker.segment_in_worker("shapes-demo", digest, CPU, video, FrameRange(0, 1), 2, 0.05, False)
    assert n == 2


def test_label_flow_through_the_worker_matches(clip, tmp_path, monkeypatch, model_calls):
    from segflow.cli import run_label

    run_label([str(clip)], str(tmp_path / "here"), model="shapes-demo", frames_per_range=6)
    monkeypatch.setenv("SEGFLOW_MODEL_PROCESS", "1")
    run_label([str(clip)], str(tmp_path / "there"), model="shapes-demo", frames_per_range=6)
    cols = ["frame", "class_name", "confidence", "geometry", "track_id"]
    here, there = (pd.read_parquet(tmp_path / d)[cols].sort_values(["frame", "confidence"]) for d in ("here", "there"))
    assert len(here) > 0
    pd.testing.assert_frame_equal(here.reset_index(drop=True), there.reset_index(drop=True), check_exact=False, atol=1e-4)
    # a model the worker cannot resolve (registered in this process only) runs here instead
    run_label([str(clip)], str(tmp_path / "color"), model="test-color", frames_per_range=6)
    assert model_calls() > 0 and len(pd.read_parquet(tmp_path / "color")) > 0


def test_images_batched_in_the_worker_match_in_process(tmp_path):
    from PIL import Image

    from segflow.models.runner import segment_same_size
    from tests import clips

    for i, frame in enumerate(clips.render(n_frames=3, seed=7)):
        Image.fromarray(frame).save(tmp_path / f"im{i}.png")
    images = [probe(tmp_path / f"im{i}.png") for i in range(3)]
    ref = resolve_model("shapes-demo")
    here = segment_same_size(ref, images, CPU, 2, 0.05, False)
    there = worker.images_in_worker("shapes-demo", ref.digest, CPU, images, 2, 0.05, False)
    assert len(here) > 3 and set(here.frame) == {0, 1, 2}  # each detection tagged with its image
    np.testing.assert_array_equal(here.frame, there.frame)
    np.testing.assert_allclose(here.score, there.score, atol=1e-4)
    assert here.rles == there.rles
