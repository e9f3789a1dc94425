"""Prefect artifacts of a label run, read back through the API; the CLI progress bar."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterId

from segflow.artifacts import PROGRESS_KEY, REPORT_KEY, SUMMARY_KEY, ProgressArtifact, publish_summary
from segflow.cli import run_label
from segflow.flows.label import label_flow
from segflow.progress import Fanout, ProgressBar, attach, attached


@pytest.fixture(scope="module")
def label_result(clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("artifacts") / "labels"
    return run_label([str(clip)], str(out), model="test-color", frames_per_range=5)


@flow
def publish(run: dict, inputs: list[dict], out: str) -> None:
    publish_summary(run, inputs, out)
    progress = ProgressArtifact()
    progress.on_start(12)
    for frames in (5, 5, 2):
        progress.on_range_done(frames)
    progress.on_finish()


def _artifacts_of(flow_run_id) -> dict:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: a for a in found}


def test_summary_artifacts_read_back_through_the_api(label_result):
    out = label_result["out"]
    run = {k: v for k, v in label_result.items() if k not in ("inputs", "out")}
    inputs = [{**item, "seconds": 2.0} for item in label_result["inputs"]]
    state = publish(run, inputs, out, return_state=True)
    assert state.is_completed()
    artifacts = _artifacts_of(state.state_details.flow_run_id)
    assert set(artifacts) == {SUMMARY_KEY, REPORT_KEY, PROGRESS_KEY}

    table = artifacts[SUMMARY_KEY]
    assert table.type == "table"
    (row,) = json.loads(table.data)
    df = pd.read_parquet(out)
    assert row["input"] == "shapes.mp4" and row["video_id"] == df.video_id.iloc[0]
    assert (row["frames"], row["instances"], row["objects"]) == (12, 36, 3)
    assert row["per_class"] == "circle 12, ring 12, square 12"
    assert row["mean_vertices"] == pytest.approx(round(df.vertex_count.mean(), 1))
    assert row["frames_per_s"] == 6.0  # 12 frames in 2 s
    assert (row["frames_from_cache"], row["ranges_reused"]) == (0, 0)  # a first run: no cache hits

    report = artifacts[REPORT_KEY]
    assert report.type == "markdown"
    name, digest = run["model_id"].split("@")
    for text in (out, f"`{name}`", digest, run["params_hash"], "`confidence` | `0.6`", "36 instance(s)"):
        assert text in report.data, text

    progress = artifacts[PROGRESS_KEY]
    assert progress.type == "progress" and float(progress.data) == 100.0


def test_progress_artifact_tracks_percent_without_a_run():
    progress = ProgressArtifact()
    progress.total = 40
    progress.on_range_done(10)  # no artifact created yet: counts, never raises
    assert progress.percent == 25.0 and progress.artifact_id is None


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_bar_draws_only_on_a_terminal():
    clock, stream = _Clock(), io.StringIO()
    bar = ProgressBar(stream=stream, enabled=True, width=10, clock=clock)
    bar.on_start(100)
    clock.now = 5.0
    bar.on_range_done(50)
    assert "[#####-----]  50/100 frames" in bar.render()
    assert "10.0 frames/s" in bar.render() and "ETA 0:00:05" in bar.render()
    bar.on_finish()
    assert stream.getvalue().endswith("\n") and "\r" in stream.getvalue()

    quiet = io.StringIO()  # a StringIO is not a TTY: nothing is written
    silent = ProgressBar(stream=quiet)
    silent.on_start(10), silent.on_range_done(10), silent.on_finish()
    assert quiet.getvalue() == ""


def test_fanout_reports_each_range_after_its_work_and_attach_is_scoped():
    seen: list[tuple[str, int]] = []

    class Recorder:
        def on_start(self, total: int) -> None:
            seen.append(("start", total))

        def on_range_done(self, frames: int) -> None:
            seen.append(("done", frames))

        def on_finish(self) -> None:
            seen.append(("finish", 0))

    recorder = Recorder()
    with attach(recorder):
        fan = Fanout(attached())
        fan.on_start(12)
        work = [seen.append(("work", len(r))) or len(r) for r in fan.track([range(5), range(5), range(2)])]
        fan.on_finish()
    assert attached() == []
    assert work == [5, 5, 2]
    assert seen == [("start", 12), ("work", 5), ("done", 5), ("work", 5), ("done", 5), ("work", 2), ("done", 2), ("finish", 0)]


def test_summary_rows_report_failed_and_duplicate_inputs(tmp_path):
    from segflow.artifacts import summary_rows

    rows = summary_rows(
        [
            {"source": "/data/bad.mp4", "status": "failed", "reason": "cannot decode video", "frames": 0, "instances": 0},
            {"source": "/data/copy.mp4", "status": "duplicate", "duplicate_of": "/data/a.mp4", "frames": 0, "instances": 0},
        ],
        tmp_path,
    )
    assert [r["status"] for r in rows] == ["failed: cannot decode video", "duplicate of a.mp4"]
    assert all(r["instances"] == 0 and r["frames_per_s"] is None for r in rows)


def test_task_runs_are_linked_stage_to_stage_in_the_ui(clip, tmp_path):
    """Stages hand each other finished values, not futures; `wait_for` still records which
    task run each one came after, so the Prefect UI draws decode -> ... -> persist."""
    state = label_flow([str(clip)], str(tmp_path / "labels"), settings={"model": "test-color"}, advanced={"frames_per_range": 5},
                       return_state=True)
    assert state.is_completed()
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    stage = {r.id: r.name.rsplit("-", 1)[0] for r in runs}
    after = {"decode": set(), "segment": {"decode"}, "filter": {"segment"}, "polygonize": {"filter"},
             "track": {"polygonize"}, "persist": {"track"}}
    assert set(stage.values()) == set(after)
    for r in runs:
        upstream = {stage[x.id] for inputs in r.task_inputs.values() for x in inputs if getattr(x, "id", None) in stage}
        assert upstream == after[stage[r.id]], r.name
