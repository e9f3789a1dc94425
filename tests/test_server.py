"""Deployments on a real Prefect server, registered the way README tells users to.

Starts `prefect server start` on 127.0.0.1, creates the work pool, runs
`prefect deploy --all` from the repo root, starts a worker, triggers label-dataset
with parameters through the API as the UI does, and stops everything it started.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        args, env=env, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def prefect(args: list[str], env: dict) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "prefect", "--no-prompt", *args]
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture
def server(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect-home"), SEGFLOW_REPO=str(REPO), PYTHONUNBUFFERED="1",
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    proc = start([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                 env, tmp_path / "server.log")
    try:
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.time() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.5)
        yield url, {**env, "PREFECT_API_URL": url}
    finally:
        stop(proc)


def test_deployments_run_from_the_api(server, clip, tmp_path):
    url, env = server
    prefect(["work-pool", "create", "segflow", "--type", "process"], env)
    deployed = prefect(["deploy", "--all"], env)
    assert "label-dataset" in deployed.stdout + deployed.stderr
    worker = start([sys.executable, "-m", "prefect", "worker", "start", "--pool", "segflow"], env, tmp_path / "worker.log")
    try:
        from prefect.client.orchestration import get_client
        from prefect.deployments import run_deployment
        from prefect.settings import PREFECT_API_URL, temporary_settings

        out = tmp_path / "labels"
        with temporary_settings({PREFECT_API_URL: url}):
            with get_client(sync_client=True) as client:
                names = {d.name for d in client.read_deployments()}
                assert names >= {"label-dataset", "label-inbox", "relabel"}
                with pytest.raises(Exception, match="(?i)validation|schema|less than or equal"):
                    run_deployment("label/label-dataset", parameters={"inputs": [str(clip)], "out": str(out), "confidence": 1.5}, timeout=0)
            run = run_deployment(
                "label/label-dataset",
                parameters={"inputs": [str(clip)], "out": str(out), "confidence": 0.5, "tracking": False},
                timeout=300,
            )
        assert run.state.is_completed(), (run.state, (tmp_path / "worker.log").read_text()[-3000:])
        df = pd.read_parquet(out)
        assert set(df["frame"]) <= set(range(12)) and df["object_id"].is_unique
        assert (df["confidence"] >= 0.5).all()
    finally:
        stop(worker)
