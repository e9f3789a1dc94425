"""Deployments on a real Prefect server, registered the way README tells users to.

Starts `prefect server start` on 127.0.0.1, creates the work pool, runs
`prefect deploy --all` from the repo root, starts a worker, triggers label-dataset
with parameters through the API as the UI does, and stops everything it started.
"""

from __future__ import annotations

import json
import os
import shutil
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


def schema_fields(schema: dict):
    yield from schema["properties"].items()
    for definition in schema.get("definitions", {}).values():
        yield from definition["properties"].items()


def run_logs(client, run_id, until: str, timeout: float = 60) -> str:
    """The flow run's log once it contains `until` (or whatever arrived by `timeout`): a run's
    logs are shipped in batches, so they can reach the API after its final state does."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.time() + timeout
    while True:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
        text = "\n".join(log.message for log in logs)
        if until in text or time.time() > deadline:
            return text
        time.sleep(1)


def wait_all(client, runs: dict, timeout: float = 420) -> dict:
    """Each named flow run's final state (polling the API)."""
    deadline, done = time.time() + timeout, {}
    while len(done) < len(runs) and time.time() < deadline:
        for name, run in runs.items():
            if name not in done:
                state = client.read_flow_run(run.id).state
                if state.is_final():
                    done[name] = state
        time.sleep(1)
    assert len(done) == len(runs), f"still running after {timeout} s: {set(runs) - set(done)}"
    return done


def test_deployments_run_from_the_api(server, clip, tmp_path):
    """The three deployments as deployed, with the parameters a UI user types: label-dataset
    labels a clip, relabel with a new confidence segments no frame, label-inbox labels a new
    file and then finds nothing new, a missing inbox completes green; bad settings are
    refused by the schema, a missing input fails with one line and no traceback."""
    url, env = server
    prefect(["work-pool", "create", "segflow", "--type", "process"], env)
    deployed = prefect(["deploy", "--all"], env)
    assert "label-dataset" in deployed.stdout + deployed.stderr
    worker = start([sys.executable, "-m", "prefect", "worker", "start", "--pool", "segflow"],
                   {**env, "PREFECT_WORKER_QUERY_SECONDS": "1"}, tmp_path / "worker.log")
    try:
        from prefect.client.orchestration import get_client
        from prefect.deployments import run_deployment
        from prefect.settings import PREFECT_API_URL, temporary_settings

        out, inbox, inbox_out = tmp_path / "labels", tmp_path / "inbox", tmp_path / "inbox-labels"
        panel = {"model": "shapes-demo", "confidence": 0.5, "tracking": False}

        def submit(name: str, parameters: dict):
            return run_deployment(name, parameters=parameters, timeout=0)

        with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
            deployments = {d.name: d for d in client.read_deployments()}
            assert set(deployments) >= {"label-dataset", "label-inbox", "relabel"}
            for name in ("label-dataset", "label-inbox", "relabel"):
                for field, spec in schema_fields(deployments[name].parameter_openapi_schema):
                    assert spec.get("title") and spec.get("description"), (name, field)
            for bad in ({"settings": {"confidence": 1.5}}, {"settings": {"device": "gpu0"}},
                        {"advanced": {"precision": "fp16"}}, {"inputs": []}):
                with pytest.raises(Exception, match="(?i)validation|schema|less than|match|enum|short"):
                    submit("label/label-dataset", {"inputs": [str(clip)], "out": str(out), **bad})

            first = {
                "label": submit("label/label-dataset", {"inputs": [str(clip)], "out": str(out), "settings": panel}),
                "missing inbox": submit("label-inbox/label-inbox", {"inbox": str(inbox), "out": str(inbox_out)}),
                "missing input": submit("label/label-dataset", {"inputs": [str(tmp_path / "nope.mp4")], "out": str(out)}),
            }
            states = wait_all(client, first)
            log = (tmp_path / "worker.log").read_text()[-3000:]
            assert states["label"].is_completed(), (states["label"], log)
            assert states["missing inbox"].is_completed(), (states["missing inbox"], log)
            assert "does not exist yet: 0 new files" in run_logs(client, first["missing inbox"].id, "0 new files")
            assert states["missing input"].is_failed()
            failure = run_logs(client, first["missing input"].id, "no such file")
            assert states["missing input"].message.startswith("inputs ") and "no such file" in failure
            assert "Traceback" not in failure and "unexpected exception" not in failure, failure
            assert "labeled 1 input(s): 12 frames" in run_logs(client, first["label"].id, "labeled 1 input(s): 12 frames")

            inbox.mkdir()
            shutil.copy(clip, inbox / "a.mp4")
            second = {
                "relabel": submit("relabel/relabel", {"out": str(out), "changes": {"confidence": 0.8}}),
                "inbox": submit("label-inbox/label-inbox", {"inbox": str(inbox), "out": str(inbox_out),
                                                            "settings": {"tracking": False}}),
            }
            states = wait_all(client, second)
            assert all(s.is_completed() for s in states.values()), (states, (tmp_path / "worker.log").read_text()[-3000:])
            assert "0 frames segmented" in run_logs(client, second["relabel"].id, "0 frames segmented")
            assert "labeled 1 input(s): 12 frames" in run_logs(client, second["inbox"].id, "labeled 1 input(s): 12 frames")

            again = {"inbox": submit("label-inbox/label-inbox", {"inbox": str(inbox), "out": str(inbox_out),
                                                                 "settings": {"tracking": False}})}
            assert wait_all(client, again)["inbox"].is_completed()
            assert "has nothing new: 0 new files" in run_logs(client, again["inbox"].id, "has nothing new: 0 new files")

        df = pd.read_parquet(out)
        assert set(df["frame"]) <= set(range(12)) and df["object_id"].is_unique
        assert len(df) and (df["confidence"] >= 0.8).all()
        assert len(pd.read_parquet(inbox_out))
    finally:
        stop(worker)


def test_segflow_server_is_used_by_later_commands(labeled, tmp_path):
    """`segflow server start` records a server on a free 127.0.0.1 port with its own Prefect
    home; a later `segflow export` runs its flow there (no hint line); `stop` ends it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(SEGFLOW_HOME=str(tmp_path / "home"), PREFECT_SERVER_ANALYTICS_ENABLED="false")

    def segflow(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "segflow.cli", *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)

    assert segflow("server", "status").returncode == 1
    started = segflow("server", "start")
    record = json.loads((tmp_path / "home" / "server" / "server.json").read_text())
    try:
        assert started.returncode == 0 and record["url"] in started.stdout, started.stderr
        assert record["url"].startswith("http://127.0.0.1:") and record["prefect_home"].startswith(str(tmp_path))
        assert segflow("server", "status").returncode == 0
        assert segflow("server", "start").stdout.startswith("Prefect server already running")
        exported = segflow("export", str(labeled), "--format", "coco", "--to", str(tmp_path / "coco.json"))
        assert exported.returncode == 0, exported.stderr
        assert "hint:" not in exported.stderr and f"View at {record['url']}/runs/flow-run/" in exported.stderr
        runs = httpx.post(f"{record['api_url']}/flow_runs/filter", json={}, timeout=10).json()
        assert [r["state_type"] for r in runs] == ["COMPLETED"]
    finally:
        stopped = segflow("server", "stop")
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    from segflow.server import _alive

    assert not _alive(record["pid"])
    assert segflow("server", "status").returncode == 1


def readme_worker_line() -> str:
    """The README's line that starts the worker in the background (its deployments recipe)."""
    readme = (REPO / "README.md").read_text()
    recipe = readme[readme.index("## Deployments"):]
    line = next(ln for ln in recipe.splitlines() if "prefect worker start --pool segflow" in ln)
    return line.split("   #")[0].strip()


def test_the_readmes_background_worker_stops_on_sigterm(server, tmp_path):
    """Started as the README says from a script (a non-interactive shell, whose `&` makes a
    command ignore SIGINT), the worker stops on one SIGTERM: Prefect's worker turns SIGTERM
    into SIGINT (a plain `prefect worker start ... &` ignored it and needed SIGKILL)."""
    url, env = server
    prefect(["work-pool", "create", "segflow", "--type", "process"], env)
    line = readme_worker_line()
    assert line.endswith("&"), line
    script = line.replace("prefect worker start", f"{sys.executable} -m prefect worker start")
    pid_file, log = tmp_path / "worker.pid", tmp_path / "worker.log"
    shell = start(["bash", "-c", f"{script}\necho $! > {pid_file}\nwait"], env, log)
    try:
        deadline = time.time() + 120
        while "started!" not in log.read_text():
            assert time.time() < deadline and shell.poll() is None, log.read_text()[-2000:]
            time.sleep(0.5)
        worker = int(pid_file.read_text())
        os.kill(worker, signal.SIGTERM)
        deadline = time.time() + 30
        while shell.poll() is None and time.time() < deadline:  # the shell's `wait` ends with the worker
            time.sleep(0.5)
        assert shell.poll() is not None, f"the worker ignored SIGTERM: {log.read_text()[-1000:]}"
        assert "stopped!" in log.read_text(), log.read_text()[-1000:]
    finally:
        stop(shell)
