"""Image datasets: consecutive images go through the stages together (a few task runs,
not six per image), with the same rows as labeling each alone, and one bad image
reported by name while the rest of its group is labeled."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from PIL import Image

from dataclasses import replace

import segflow.flows.label as label
import segflow.pipeline as pipeline
import segflow.tasks.polygonize as poly
from segflow.cli import run_label
from segflow.errors import InputsFailed
from tests import clips

SETTINGS = dict(model="test-color")
COLS = ["source", "frame", "object_id", "track_id", "class_name", "confidence", "geometry", "params_hash"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, clip):
    """Five images, a video, four images: three groups in name order."""
    data = tmp_path_factory.mktemp("dataset")
    for i, frame in enumerate(clips.render(n_frames=9, seed=5)):
        Image.fromarray(frame).save(data / f"{'a' if i < 5 else 'z'}{i:02d}.png")
    shutil.copy(clip, data / "m.mp4")
    return data


def table(out) -> pd.DataFrame:
    df = pd.read_parquet(out)[COLS]
    return df.sort_values(["source", "frame", "object_id"]).reset_index(drop=True)


def test_images_labeled_together_match_one_by_one(dataset, tmp_path, monkeypatch):
    groups = [[v.source.rsplit("/", 1)[-1] for v in g] for g in pipeline.input_groups(_probe(dataset))]
    assert groups == [[f"a{i:02d}.png" for i in range(5)], ["m.mp4"], [f"z{i:02d}.png" for i in range(5, 9)]]
    segment, *rest = label.LABEL.stages  # model tasks of 3 + 2 images, then 3 + 1:
    monkeypatch.setattr(label, "LABEL", replace(label.LABEL, stages=(replace(segment, images_per_task=3), *rest)))
    together = run_label([str(dataset)], str(tmp_path / "together"), **SETTINGS)
    monkeypatch.setattr(pipeline, "IMAGES_PER_GROUP", 1)
    alone = run_label([str(dataset)], str(tmp_path / "alone"), **SETTINGS)
    want = table(tmp_path / "alone")
    assert len(want) > 20 and want["source"].nunique() == 10
    pd.testing.assert_frame_equal(table(tmp_path / "together"), want)
    for a, b in zip(together["inputs"], alone["inputs"]):
        assert {k: a[k] for k in ("source", "frames", "instances", "frames_segmented", "files_written")} == \
               {k: b[k] for k in ("source", "frames", "instances", "frames_segmented", "files_written")}
    # A rerun with another confidence takes every image's raw output from the cache, together.
    monkeypatch.setattr(pipeline, "IMAGES_PER_GROUP", 256)
    rerun = run_label([str(dataset)], str(tmp_path / "together"), **SETTINGS, confidence=0.8)
    assert all(r["frames_segmented"] == 0 and not r["up_to_date"] for r in rerun["inputs"])
    run_label([str(dataset)], str(tmp_path / "fresh"), **SETTINGS, confidence=0.8)
    pd.testing.assert_frame_equal(table(tmp_path / "together"), table(tmp_path / "fresh"))
    again = run_label([str(dataset)], str(tmp_path / "together"), **SETTINGS, confidence=0.8)
    assert all(r["up_to_date"] for r in again["inputs"])
    # Twice the coarseness: each image's search starts from its finer polygons, all in one call.
    coarser = dict(SETTINGS, confidence=0.8, coarseness=0.01)
    run_label([str(dataset)], str(tmp_path / "together"), **coarser)
    run_label([str(dataset)], str(tmp_path / "fresh-coarser"), **coarser)
    pd.testing.assert_frame_equal(table(tmp_path / "together"), table(tmp_path / "fresh-coarser"))
    assert not table(tmp_path / "together").equals(table(tmp_path / "fresh"))  # the polygons did change


def test_one_failing_image_fails_alone(dataset, tmp_path, monkeypatch):
    real = poly.plan_polygons  # called for each image, whether polygonized alone or together

    def failing(config, work):
        if work.video.source.endswith("a02.png"):
            raise RuntimeError("polygonize broke on purpose")
        return real(config, work)

    monkeypatch.setattr(poly, "plan_polygons", failing)
    with pytest.raises(InputsFailed, match="1 of 10 input") as info:
        run_label([str(dataset)], str(tmp_path / "out"), **SETTINGS)
    bad = [r for r in info.value.summary["inputs"] if r["status"] == "failed"]
    assert [r["source"].rsplit("/", 1)[-1] for r in bad] == ["a02.png"] and "on purpose" in bad[0]["reason"]
    assert table(tmp_path / "out")["source"].nunique() == 9
    monkeypatch.setattr(poly, "plan_polygons", real)
    fixed = run_label([str(dataset)], str(tmp_path / "out"), **SETTINGS)
    assert [r["source"].rsplit("/", 1)[-1] for r in fixed["inputs"] if not r["up_to_date"]] == ["a02.png"]


def _probe(data):
    from segflow.job import expand_inputs
    from segflow.media import probe

    return [probe(p) for p in expand_inputs([str(data)])]


def test_many_inputs_are_summed_up_in_one_line(dataset, tmp_path, capsys, monkeypatch):
    import segflow.cli as cli

    monkeypatch.setattr(cli, "LISTED_INPUTS", 5)
    assert cli.main(["label", str(dataset), "--out", str(tmp_path / "out"), "--model", "test-color"]) == 0
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("ok ")] == [
        f"ok 10 inputs: 21 frames, {len(pd.read_parquet(tmp_path / 'out'))} instances, 21 frames segmented, "
        f"10 file(s) written, 0 up to date (each: {tmp_path / 'out'}/.segflow/manifest.json)"
    ]
