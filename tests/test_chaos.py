"""Killed with SIGKILL at random moments, a rerun ends with the clean run's table; and the
parts segflow runs on (the Prefect API, the object store, the disk) failing mid-run: a
bounded exit with one clear line, nothing torn, and a rerun once the part is back gives
the clean run's table (bench/chaos.py runs the same trials, with more of them)."""

from __future__ import annotations

import os
import random

import pytest

from tests import clips
from tests.conftest import REPO, bench_module

chaos = bench_module("chaos")
run_trials = chaos.run_trials


@pytest.fixture
def chaos_env():
    from prefect.settings import PREFECT_API_URL

    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "SEGFLOW_PLUGINS": "tests.color_model",
        "SEGFLOW_TEST_MODEL_DELAY": "0.1",  # stretch the run so kills land mid-range
        "PREFECT_API_URL": PREFECT_API_URL.value(),  # the session's test server: no server per process
    }


@pytest.fixture
def chaos_clip(tmp_path):
    return clips.write_mp4(tmp_path / "clip.mp4", clips.render(n_frames=24, seed=5))


def test_kill_and_resume(tmp_path, chaos_env, chaos_clip):
    result = run_trials(chaos_clip, tmp_path, trials=3, model="test-color", env=chaos_env, frames_per_range=4, seed=1)
    assert result == {"trials": 3, "identical": 3, "corrupt_files_seen": 0}


def test_kill_and_resume_on_images(tmp_path, chaos_env):
    """An image dataset in shards of 4: killed mid-run (mid-shard), a rerun gives the clean table."""
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for i, frame in enumerate(clips.render(n_frames=16, seed=5)):
        Image.fromarray(frame).save(images / f"im{i:02d}.png")
    result = run_trials(images, tmp_path / "work", trials=3, model="test-color", env=chaos_env, seed=2,
                        extra=("--images-per-shard", "4"))
    assert result == {"trials": 3, "identical": 3, "corrupt_files_seen": 0}


def fault(name: str, clip, work, env, trials: int = 1) -> dict:
    result = chaos.RUNNERS[name](clip, work, trials, "test-color", {**env, "SEGFLOW_TEST_MODEL_DELAY": "0.3"}, 4,
                                 random.Random(0))
    assert result["identical"] == trials and result["corrupt_files_seen"] == 0, result
    assert result["clear"] == trials, result  # one line that says what happened, no traceback
    assert None not in result["exit_codes"] and result["longest_fault_to_exit_s"] < chaos.bound(name), result
    return result


def test_prefect_api_killed_mid_run(tmp_path, chaos_env, chaos_clip):
    """The labels are finished, the run's record could not be sent: exit 0, one line."""
    result = fault("api", chaos_clip, tmp_path, chaos_env)
    assert result["exit_codes"] == [0] and result["longest_last_write_to_exit_s"] < 10, result


def test_object_store_killed_mid_run(tmp_path, chaos_env, chaos_clip):
    """--out on S3 (trial 0: the labels missing, exit 1) and inputs on S3 (trial 1: fetched
    before the run, so it finishes)."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    result = fault("s3", chaos_clip, tmp_path, chaos_env, trials=2)
    assert result["exit_codes"][0] == 1 and result["exit_codes"][1] == 0, result


def test_disk_fills_mid_run(tmp_path, chaos_env, chaos_clip):
    parts = bench_module("parts")

    try:
        with parts.tmpfs(tmp_path / "probe", 64):
            pass
    except parts.Unavailable as exc:
        pytest.skip(str(exc))
    result = fault("disk", chaos_clip, tmp_path, chaos_env)
    assert result["exit_codes"] == [1], result
    out = (tmp_path / "disk0.log").read_text()
    assert "Retry" not in out  # not retried: the model ran once per range


@pytest.mark.server
def test_process_worker_killed_with_its_flow_run(tmp_path, chaos_env, chaos_clip):
    """`prefect worker start` SIGKILLed with the deployment's flow run it started (as if
    its machine went away) once the run wrote its first labels: segflow's heartbeat
    automation marks the run Crashed, and the deployment's next run resumes it to the
    clean run's table."""
    env = {k: v for k, v in chaos_env.items() if k != "PREFECT_API_URL"}  # the trial's own server
    result = chaos.RUNNERS["worker"](chaos_clip, tmp_path, 1, "test-color", {**env, "SEGFLOW_TEST_MODEL_DELAY": "0.5"},
                                     4, random.Random(0))
    assert result["identical"] == 1 and result["corrupt_files_seen"] == 0, result
    assert result["exit_codes"] == [0] and result["longest_fault_to_exit_s"] < 120, result  # Crashed in time
