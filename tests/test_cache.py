"""Reruns: identical settings decode nothing and run no model; cheap settings skip the model."""

from __future__ import annotations

import pandas as pd
import pytest

from segflow.cli import run_label

SETTINGS = dict(model="test-color", frames_per_range=5)


@pytest.fixture
def first_run(clip, tmp_path, model_calls):
    out = tmp_path / "o"
    result = run_label([str(clip)], str(out), **SETTINGS)
    assert model_calls() > 0 and result["inputs"][0]["frames_segmented"] == 12
    return out


def test_identical_rerun_runs_no_model_and_writes_nothing(clip, first_run, model_calls, monkeypatch):
    import segflow.media as decode

    def no_decode(*a, **k):
        raise AssertionError("decoded frames on an identical rerun")

    monkeypatch.setattr(decode, "read_batches", no_decode)
    ColorCalls = model_calls()
    before = {p: p.stat().st_mtime_ns for p in first_run.glob("*/*.parquet")}
    result = run_label([str(clip)], str(first_run), **SETTINGS)
    assert model_calls() == ColorCalls
    assert result["inputs"][0]["up_to_date"]
    assert {p: p.stat().st_mtime_ns for p in first_run.glob("*/*.parquet")} == before


@pytest.mark.parametrize(
    "change",
    [dict(confidence=0.8), dict(coarseness=0.02), dict(iou_threshold=0.9), dict(tracking=False)],
    ids=lambda c: next(iter(c)),
)
def test_cheap_setting_change_runs_no_model(clip, first_run, model_calls, change):
    calls = model_calls()
    old = pd.read_parquet(first_run)
    result = run_label([str(clip)], str(first_run), **SETTINGS, **change)
    new = pd.read_parquet(first_run)
    assert model_calls() == calls
    assert result["inputs"][0]["frames_segmented"] == 0
    assert result["inputs"][0]["files_written"] == 3
    assert new["params_hash"].nunique() == 1 and new["params_hash"].iloc[0] != old["params_hash"].iloc[0]


def test_new_detection_range_reuses_aligned_ranges(clip, first_run, model_calls):
    calls = model_calls()
    result = run_label([str(clip)], str(first_run), **SETTINGS, start_frame=5)
    assert model_calls() == calls  # frames 5-9 and 10-11 are the same cached ranges
    df = pd.read_parquet(first_run)
    assert df["frame"].min() == 5 and result["inputs"][0]["files_written"] == 2


def test_coarseness_change_keeps_ids_without_retracking(clip, first_run):
    tracks = first_run / ".segflow" / "cache" / "track"
    before = sorted(p.name for p in tracks.rglob("*.pq"))
    old = pd.read_parquet(first_run).sort_values(["frame", "track_id"])
    run_label([str(clip)], str(first_run), **SETTINGS, coarseness=0.02)
    new = pd.read_parquet(first_run).sort_values(["frame", "track_id"])
    assert sorted(p.name for p in tracks.rglob("*.pq")) == before  # no track file made
    assert new["object_id"].tolist() == old["object_id"].tolist()
    assert new["vertex_count"].sum() < old["vertex_count"].sum()


@pytest.mark.parametrize("coarser", [0.01, 0.02, 0.015], ids=["x2", "x4", "x3"])
def test_coarser_rerun_gives_what_a_fresh_run_gives(clip, first_run, tmp_path, coarser, monkeypatch):
    """A rerun at 2x or 4x the coarseness continues from the earlier polygons where its
    coarser tolerances fail (x3 cannot); every polygon is the one a fresh run makes."""
    from segflow.tasks import polygonize

    used = []
    finer = polygonize.finer_polygons
    monkeypatch.setattr(polygonize, "finer_polygons", lambda *a: used.append(finer(*a)) or used[-1])
    run_label([str(clip)], str(first_run), **SETTINGS, coarseness=coarser)
    assert len(used) == 3 and all((u is not None) == (coarser != 0.015) for u in used)
    assert coarser == 0.015 or all(u[0] == polygonize.tolerance_px(0.005, 320, 240) for u in used)
    fresh = tmp_path / "fresh"
    run_label([str(clip)], str(fresh), **SETTINGS, coarseness=coarser)
    cols = ["frame", "object_id", "geometry", "vertex_count"]
    a = pd.read_parquet(first_run).sort_values(["frame", "object_id"])[cols].reset_index(drop=True)
    b = pd.read_parquet(fresh).sort_values(["frame", "object_id"])[cols].reset_index(drop=True)
    assert len(a) > 0
    pd.testing.assert_frame_equal(a, b)


def _files(out) -> list:
    return sorted(p for p in out.rglob("*") if p.is_file())


def test_reruns_keep_one_cache_file_per_range_and_stage(clip, image, tmp_path):
    """Each rerun prunes the cache files of its inputs no label file needs: after three
    confidence changes the folder holds as many files as after the first run."""
    from segflow.storage.housekeeping import cache_report
    from segflow.storage.layout import Layout

    out = tmp_path / "o"
    run_label([str(clip), str(image)], str(out), **SETTINGS)
    first = _files(out)
    for confidence in (0.7, 0.8, 0.65):
        result = run_label([str(clip), str(image)], str(out), **SETTINGS, confidence=confidence)
        assert not any(r["up_to_date"] for r in result["inputs"])
    assert len(_files(out)) == len(first)
    report = cache_report(Layout(out))
    # the clip's 3 ranges and the image's shard; a shard's polygons are in its label file
    assert {k: v["files"] for k, v in report["stages"].items()} == {"kept": 4, "poly": 3, "raw": 4, "track": 4}
    assert report["unreachable_files"] == 0 and report["label_files"] == 3 + 1  # the clip's 3 ranges, 1 shard
    fresh = tmp_path / "fresh"
    run_label([str(clip), str(image)], str(fresh), **SETTINGS, confidence=0.65)
    pd.testing.assert_frame_equal(*(pd.read_parquet(o).sort_values(["source", "frame", "object_id"])
                                    .reset_index(drop=True) for o in (out, fresh)))


def test_cache_command_shows_size_and_prunes(first_run, clip, capsys):
    import json
    import shutil

    from segflow.cli import main

    kept = sorted((first_run / ".segflow" / "cache" / "kept").rglob("*.pq"))[0]
    stray = kept.with_name(kept.name.rsplit("_", 1)[0] + "_0123456789abcdef.pq")
    shutil.copy(kept, stray)  # as if from settings no label file was made with
    assert main(["cache", str(first_run), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["unreachable_files"] == 1 and report["unreachable_bytes"] == stray.stat().st_size
    assert report["label_files"] == 3 and report["cache_files"] == 4 * 3 + 1
    assert main(["cache", str(first_run), "--prune"]) == 0
    assert "pruned       1 files" in capsys.readouterr().out and not stray.exists() and kept.exists()
    assert run_label([str(clip)], str(first_run), **SETTINGS)["inputs"][0]["up_to_date"]
    assert main(["cache", str(first_run / "missing")]) == 2
