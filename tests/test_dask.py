"""The Dask task runner: a local cluster of 2 workers gives the same table as threads; a
cluster started the way Dask users start one (`dask scheduler`, `dask worker`, inputs and
output on an object store, the README's recipe line for line) gives a local run's table,
and so does a run whose worker is SIGKILLed mid-run."""

from __future__ import annotations

import os
import random
import re
import shlex
import subprocess
import sys

import pandas as pd
import pytest

from segflow.cli import run_label
from tests import clips
from tests.conftest import REPO, bench_module

pytest.importorskip("prefect_dask")


def table(out) -> pd.DataFrame:
    df = pd.read_parquet(out)
    return df.sort_values(["source", "frame", "object_id"]).reset_index(drop=True)


def test_dask_runner_matches_threads(clip, image, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # workers import the test model from tests/
    settings = dict(model="test-color", frames_per_range=4)
    run_label([str(clip), str(image)], str(tmp_path / "threads"), **settings)
    run_label([str(clip), str(image)], str(tmp_path / "dask"), runner="dask", dask_workers=2, **settings)
    pd.testing.assert_frame_equal(table(tmp_path / "threads"), table(tmp_path / "dask"))


def readme_recipe() -> list[str]:
    """The README's cluster recipe: its `dask scheduler`, `dask worker` and `segflow label` lines."""
    text = (REPO / "README.md").read_text()
    block = re.search(r"```bash\n((?:\s*dask scheduler.*\n)(?:.*\n)*?)\s*```", text)
    assert block, "README: no cluster recipe"
    return [line.strip() for line in block.group(1).splitlines() if line.strip()]


def argv(line: str, port: int, *extra: str) -> list[str]:
    words = shlex.split(line.replace("8786", str(port)))
    program = {"dask": [sys.executable, "-m", "dask"], "segflow": [sys.executable, "-m", "segflow.cli"]}[words[0]]
    return [*program, *words[1:], *extra]


@pytest.mark.cluster
def test_readme_cluster_recipe_on_s3(tmp_path, clip, image):
    """Scheduler and two workers as the README starts them (each in a folder of its own,
    none shared with the client), inputs from and labels to an S3-compatible server."""
    pytest.importorskip("s3fs")
    parts = bench_module("parts")
    from prefect.settings import PREFECT_API_URL

    scheduler_line, worker_line, label_line = readme_recipe()
    assert scheduler_line.startswith("dask scheduler") and worker_line.startswith("dask worker")
    store, endpoint = parts.moto_server(log=tmp_path / "moto.log")
    env = {**parts.base_env(**parts.s3_env(endpoint)), "PYTHONPATH": str(REPO), "SEGFLOW_PLUGINS": "tests.color_model",
           "PREFECT_API_URL": PREFECT_API_URL.value()}
    fs = parts.s3_fs(endpoint)
    fs.mkdir("inbox")
    fs.mkdir("labels")
    fs.put(str(clip), "inbox/videos/a.mp4")
    fs.put(str(image), "inbox/videos/b.png")
    port = parts.free_port()
    started = []
    try:
        started.append(parts.Part(argv(scheduler_line, port), env, tmp_path / "scheduler.log", "dask scheduler"))
        for name in ("w1", "w2"):
            folder = tmp_path / name
            folder.mkdir()
            log = open(folder / "worker.log", "wb")
            started.append(subprocess.Popen(argv(worker_line, port), cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                                            env={**env, "SEGFLOW_CACHE": str(folder / "cache")}, start_new_session=True))
        parts.wait_for_workers(f"tcp://127.0.0.1:{port}", 2)
        settings = ["--model", "test-color", "--frames-per-range", "4"]
        client = {**env, "SEGFLOW_CACHE": str(tmp_path / "client-cache")}
        done = subprocess.run(argv(label_line, port, *settings), env=client, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        local = subprocess.run([sys.executable, "-m", "segflow.cli", "label", "s3://inbox/videos/", "--out",
                                "s3://labels/local", *settings], env=client, capture_output=True, text=True, timeout=600)
        assert local.returncode == 0, local.stdout + local.stderr
        s3_table = bench_module("chaos").table

        clustered = s3_table("s3://labels/run1", fs)
        assert set(clustered["source"]) == {"s3://inbox/videos/a.mp4", "s3://inbox/videos/b.png"}
        pd.testing.assert_frame_equal(clustered, s3_table("s3://labels/local", fs))
        # the workers fetched the inputs into their own folders: they did the work
        assert any((tmp_path / name / "cache").rglob("*.mp4") for name in ("w1", "w2"))
    finally:
        for part in reversed(started):
            if isinstance(part, parts.Part):
                part.stop()
            else:
                os.killpg(part.pid, 9)
                part.wait()
        store.stop()


@pytest.mark.cluster
def test_dask_worker_killed_mid_run(tmp_path):
    """One of two workers SIGKILLed once the first labels are written: its ranges run on
    the other, the command exits 0 with the clean run's table."""
    chaos = bench_module("chaos")
    from prefect.settings import PREFECT_API_URL

    clip = clips.write_mp4(tmp_path / "clip.mp4", clips.render(n_frames=24, seed=5))
    env = {**os.environ, "PYTHONPATH": str(REPO), "SEGFLOW_PLUGINS": "tests.color_model",
           "SEGFLOW_TEST_MODEL_DELAY": "0.3", "PREFECT_API_URL": PREFECT_API_URL.value()}
    result = chaos.dask_worker_fault(clip, tmp_path, 1, "test-color", env, 4, random.Random(0))
    assert result["identical"] == 1 and result["corrupt_files_seen"] == 0 and result["exit_codes"] == [0], result
