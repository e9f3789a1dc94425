"""A rerun with nothing to do starts no flow run (nor a temporary Prefect server): the
cache check is the flow's own (plan, keys, probes), its summary and manifest record the
flow's. A rerun with work to do still goes through the label flow."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

import segflow.cli as cli
from segflow.cli import run_label
from tests import clips

SETTINGS = dict(model="test-color", frames_per_range=5, images_per_shard=3)
VOLATILE = ("seconds", "finished_at", "mtime_ns")  # differ between any two runs


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, clip):
    """Four images (two shards), a video, and the same video again (a duplicate)."""
    data = tmp_path_factory.mktemp("rerun-data")
    for i, frame in enumerate(clips.render(n_frames=4, seed=3)):
        Image.fromarray(frame).save(data / f"s{i}.png")
    shutil.copy(clip, data / "m.mp4")
    shutil.copy(clip, data / "n.mp4")
    return data


def steady(summary: dict) -> dict:
    """A run summary without what differs between two runs of the same work."""
    drop = lambda d: {k: v for k, v in d.items() if k not in VOLATILE}  # noqa: E731
    return drop(summary) | {"inputs": [drop(r) for r in summary.get("inputs", ())]}


def no_flow(*args, **kwargs):
    raise AssertionError("a label flow was started")


def test_an_up_to_date_rerun_is_the_flows_summary_without_a_flow_run(dataset, tmp_path, monkeypatch):
    out = str(tmp_path / "labels")
    first = run_label([str(dataset)], out, **SETTINGS)
    assert not any(r.get("up_to_date") for r in first["inputs"])
    with monkeypatch.context() as m:  # the flow serving the rerun, as before
        m.setattr(cli, "_served_by_cache", lambda job: None)
        by_flow = run_label([str(dataset)], out, **SETTINGS)
    recorded = json.loads((tmp_path / "labels" / ".segflow" / "manifest.json").read_text())
    monkeypatch.setattr(cli, "_label_flow", lambda *a: no_flow)
    shortcut = run_label([str(dataset)], out, **SETTINGS)
    assert steady(shortcut) == steady(by_flow)
    assert [r["status"] for r in shortcut["inputs"]].count("duplicate") == 1
    assert all(r["up_to_date"] for r in shortcut["inputs"] if r["status"] == "ok")
    again = json.loads((tmp_path / "labels" / ".segflow" / "manifest.json").read_text())
    assert again["last_run"]["finished_at"] > recorded["last_run"]["finished_at"]  # recorded as the flow does
    assert steady(again["last_run"]) == steady(recorded["last_run"])


def test_a_rerun_with_work_to_do_runs_the_flow(clip, tmp_path, monkeypatch):
    out = str(tmp_path / "labels")
    run_label([str(clip)], out, **SETTINGS)
    flows = []
    real = cli._label_flow
    monkeypatch.setattr(cli, "_label_flow", lambda *a: flows.append(a) or real(*a))
    changed = run_label([str(clip)], out, **SETTINGS, confidence=0.8)  # filter onwards again
    assert flows and changed["inputs"][0]["files_written"] == 3 and not changed["inputs"][0]["up_to_date"]
    (tmp_path / "labels" / "extra").mkdir()
    ranges = sorted((tmp_path / "labels").glob("*/*.parquet"))
    ranges[0].unlink()  # one range's label file gone: that range is labeled again
    flows.clear()
    again = run_label([str(clip)], out, **SETTINGS, confidence=0.8)
    assert flows and again["inputs"][0]["files_written"] == 1


def test_a_rerun_with_an_unreadable_input_runs_the_flow(clip, tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(clip, data / "m.mp4")
    out = str(tmp_path / "labels")
    run_label([str(data)], out, **SETTINGS)
    (data / "bad.mp4").write_bytes(b"not a video")
    monkeypatch.setattr(cli, "_label_flow", lambda *a: no_flow)
    with pytest.raises(AssertionError, match="a label flow was started"):  # the run reports the bad input
        run_label([str(data)], out, **SETTINGS)


def test_an_up_to_date_rerun_needs_no_prefect_api(clip, tmp_path, monkeypatch, capsys):
    from segflow.cli import main

    out = tmp_path / "labels"
    run_label([str(clip)], str(out), **SETTINGS)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # nothing answers there
    args = ["label", str(clip), "--out", str(out), "--model", "test-color", "--frames-per-range", "5"]
    assert main(args) == 0
    assert "up to date" in capsys.readouterr().out
    assert main([*args, "--confidence", "0.8"]) == 2  # work to do: a flow run, refused before it starts
    err = capsys.readouterr().err
    assert "does not answer" in err and len(err.strip().splitlines()) == 1, err


def test_the_trackers_scipy_import_starts_when_the_model_runs(clip, tmp_path, monkeypatch):
    """scipy.optimize (~0.5 s) is imported beside the model's work of a tracked run (the
    track stage's `warm_up`), once per run, not on a rerun the model has no part in."""
    from types import SimpleNamespace

    from segflow.tasks import track

    started = []

    class Thread:
        def __init__(self, target, args, name, daemon):
            self.call = (target, args, daemon)

        def start(self):
            started.append(self.call)

    monkeypatch.setattr(track, "sys", SimpleNamespace(modules={}))  # as in a process that has not imported it
    monkeypatch.setattr(track, "threading", SimpleNamespace(Thread=Thread))
    out = str(tmp_path / "labels")
    run_label([str(clip)], out, **SETTINGS)
    assert [(args, daemon) for _, args, daemon in started] == [(("scipy.optimize",), True)]
    run_label([str(clip)], out, **SETTINGS, confidence=0.8)  # filter onwards: no model, no early import
    run_label([str(clip)], str(tmp_path / "untracked"), **SETTINGS, tracking=False)
    assert len(started) == 1


def test_a_tracker_upgrade_labels_a_tracked_video_again(clip, tmp_path, monkeypatch):
    """Ids can change with the tracker's version: a rerun after an upgrade is not served by
    the label files of the older tracker (its track stage and label files are made again)."""
    import segflow.tasks.persist as persist
    import segflow.tasks.track as track

    out = str(tmp_path / "labels")
    first = run_label([str(clip)], out, **SETTINGS)
    assert run_label([str(clip)], out, **SETTINGS)["inputs"][0]["up_to_date"]
    monkeypatch.setattr(persist, "TRACKER_VERSION", "next-tracker", raising=False)
    monkeypatch.setattr(track, "TRACKER_VERSION", "next-tracker")
    again = run_label([str(clip)], out, **SETTINGS)
    assert not again["inputs"][0]["up_to_date"]
    assert again["inputs"][0]["files_written"] == first["inputs"][0]["files_written"] > 0
    untracked = run_label([str(clip)], str(tmp_path / "untracked"), **SETTINGS, tracking=False)
    monkeypatch.setattr(persist, "TRACKER_VERSION", "third-tracker", raising=False)
    monkeypatch.setattr(track, "TRACKER_VERSION", "third-tracker")
    assert untracked["inputs"][0]["files_written"] > 0
    assert run_label([str(clip)], str(tmp_path / "untracked"), **SETTINGS, tracking=False)["inputs"][0]["up_to_date"]
