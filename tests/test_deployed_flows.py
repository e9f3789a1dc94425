"""The deployments' flows (label-inbox, relabel) called as a worker calls them: with the
parameters a UI user types, relative paths included (relative to the working folder)."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from segflow.flows.inbox import label_inbox_flow
from segflow.flows.relabel import relabel_flow


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_inbox_missing_then_new_then_nothing_new(in_tmp, clip, caplog):
    settings = {"frames_per_range": 5}
    first = label_inbox_flow(inbox="inbox", out="labels", settings={"model": "test-color"}, advanced=settings)
    assert first["new"] == 0
    assert "does not exist yet: 0 new files" in caplog.text
    (in_tmp / "inbox").mkdir()
    empty = label_inbox_flow(inbox="inbox", out="labels", settings={"model": "test-color"}, advanced=settings)
    assert empty["new"] == 0
    shutil.copy(clip, in_tmp / "inbox" / "a.mp4")
    labeled = label_inbox_flow(inbox="inbox", out="labels", settings={"model": "test-color"}, advanced=settings)
    assert labeled["new"] == 1 and len(pd.read_parquet(in_tmp / "labels"))
    again = label_inbox_flow(inbox="inbox", out="labels", settings={"model": "test-color"}, advanced=settings)
    assert again["new"] == 0


def test_relabel_relative_out_runs_no_model(in_tmp, clip, model_calls):
    from segflow.cli import run_label

    run_label([str(clip)], "labels", model="test-color", frames_per_range=5)
    calls = model_calls()
    result = relabel_flow(out="labels", changes={"confidence": 0.9})
    assert model_calls() == calls
    assert sum(r["frames_segmented"] for r in result["inputs"]) == 0
    assert (pd.read_parquet(in_tmp / "labels")["confidence"] >= 0.9).all()


def test_relabel_back_to_the_whole_video(in_tmp, clip):
    from segflow.cli import run_label

    run_label([str(clip)], "labels", model="test-color", frames_per_range=5, end_frame=4)
    assert pd.read_parquet(in_tmp / "labels")["frame"].max() == 4
    result = relabel_flow(out="labels", changes={"end_frame": -1})  # as the form sends it
    assert result["settings"].get("end_frame") is None
    assert sorted(pd.read_parquet(in_tmp / "labels")["frame"].unique()) == list(range(12))


def test_each_deployment_table_holds_one_settings_set_by_default():
    """label-inbox writes its own table by default: a relabel of label-dataset's `labels` to
    other settings, then an inbox run at its defaults, must not mix two params_hash in one table."""
    from segflow.cli import cli
    from segflow.flows.label import label_flow

    def default_out(flow):
        return flow.parameters.properties["out"]["default"]

    assert default_out(label_flow) == default_out(relabel_flow) == "labels"
    assert default_out(label_inbox_flow) == "labels-inbox"
    import click

    serve = {p.name: p.default for p in cli.get_command(click.Context(cli), "serve").params}
    assert serve["inbox_out"] == default_out(label_inbox_flow) and serve["out"] == default_out(label_flow)


def test_prefect_deploy_registers_label_inbox_one_run_at_a_time(tmp_path):
    """`prefect deploy` of prefect.yaml's label-inbox registers INBOX_CONCURRENCY (limit 1,
    CANCEL_NEW), and the server enforces it: of two runs due at once (late scheduled runs
    a worker picks up together), the second is cancelled, not run into the same folder."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import yaml
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.client.schemas.objects import ConcurrencyLimitConfig
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.settings import PREFECT_API_URL
    from prefect.states import Pending, Running, StateType

    from segflow.settings import INBOX_CONCURRENCY

    repo = Path(__file__).resolve().parents[1]
    spec = {d["name"]: d for d in yaml.safe_load((repo / "prefect.yaml").read_text())["deployments"]}
    assert spec["label-inbox"]["concurrency_limit"] == INBOX_CONCURRENCY  # `segflow serve` passes the same
    ConcurrencyLimitConfig(**INBOX_CONCURRENCY)
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name="segflow", type="process"))
        except ObjectAlreadyExists:
            pass
    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value(), SEGFLOW_REPO=str(repo))
    done = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--name", "label-inbox"],
                          cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("label-inbox/label-inbox")
        assert deployment.global_concurrency_limit.limit == 1
        assert deployment.concurrency_options.collision_strategy.value == "CANCEL_NEW"
        client.pause_deployment(deployment.id)  # no scheduled runs of its own while this test drives two
        first, second = (client.create_flow_run_from_deployment(deployment.id) for _ in range(2))
        assert client.set_flow_run_state(first.id, Pending()).state.type == StateType.PENDING
        assert client.set_flow_run_state(first.id, Running()).state.type == StateType.RUNNING
        client.set_flow_run_state(second.id, Pending())
        assert client.read_flow_run(second.id).state.type == StateType.CANCELLED
