"""Killed with SIGKILL at random moments, a rerun ends with the clean run's table."""

from __future__ import annotations

import os

from bench.chaos import run_trials
from tests import clips
from tests.conftest import REPO


def test_kill_and_resume(tmp_path):
    from prefect.settings import PREFECT_API_URL

    clip = clips.write_mp4(tmp_path / "clip.mp4", clips.render(n_frames=24, seed=5))
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "SEGFLOW_PLUGINS": "tests.color_model",
        "SEGFLOW_TEST_MODEL_DELAY": "0.1",  # stretch the run so kills land mid-range
        "PREFECT_API_URL": PREFECT_API_URL.value(),  # the session's test server: no server per process
    }
    result = run_trials(clip, tmp_path, trials=3, model="test-color", env=env, frames_per_range=4, seed=1)
    assert result == {"trials": 3, "identical": 3, "corrupt_files_seen": 0}
