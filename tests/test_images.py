"""Image datasets in shards: images labeled and stored together (one label file and one
cache file per stage for each shard, not per image), with the same rows as labeling each
alone; added images touch only their shard, an image seen before is not segmented again,
and one bad image is reported by name while the rest of its shard is labeled."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

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


def files(out, under: str) -> list:
    return sorted(p for p in (out / under).rglob("*") if p.is_file())


def test_shards_match_images_alone(dataset, tmp_path, monkeypatch):
    videos = _probe(dataset)
    groups = pipeline.input_groups(videos, 3)
    assert [g[0].kind for g in groups] == ["video"] + ["shard"] * (len(groups) - 1)
    members = [m.source.rsplit("/", 1)[-1] for g in groups[1:] for s in g for m in s.members]
    assert members == [f"{'a' if i < 5 else 'z'}{i:02d}.png" for i in range(9)]  # each image once, in name order
    together = run_label([str(dataset)], str(tmp_path / "together"), **SETTINGS, images_per_shard=3)
    alone = run_label([str(dataset)], str(tmp_path / "alone"), **SETTINGS, images_per_shard=1)
    want = table(tmp_path / "alone")
    assert len(want) > 20 and want["source"].nunique() == 10
    pd.testing.assert_frame_equal(table(tmp_path / "together"), want)
    # A shard is one range, however many frames a video's range has.
    run_label([str(dataset)], str(tmp_path / "one"), **SETTINGS, images_per_shard=9, frames_per_range=2)
    pd.testing.assert_frame_equal(table(tmp_path / "one"), want)
    assert len(files(tmp_path / "one", "shards")) == 1 and len(files(tmp_path / "one", ".segflow/cache/raw/shards")) == 1
    keys = ("source", "video_id", "frames", "instances", "frames_segmented", "dropped_unmapped")
    assert sorted([{k: r[k] for k in keys} for r in together["inputs"]], key=str) == \
        sorted([{k: r[k] for k in keys} for r in alone["inputs"]], key=str)
    shards = {r["shard"] for r in together["inputs"] if r["kind"] == "image"}
    assert 1 < len(shards) < 9
    # One label file per shard, one cache file per shard and stage, nothing per image; the
    # label file is the shard's polygon cache (no polygon file once it is written).
    assert [p.name for p in files(tmp_path / "together", "shards")] == sorted(f"{s}.parquet" for s in shards)
    for stage in ("raw", "kept", "track"):
        assert len(files(tmp_path / "together", f".segflow/cache/{stage}/shards")) == len(shards)
    assert files(tmp_path / "together", ".segflow/cache/poly/shards") == []
    assert sum(r["files_written"] for r in together["inputs"] if r["kind"] == "image") == len(shards)
    # A rerun with another confidence takes every image's raw output from the cache, and
    # the polygons of the instances still kept from the label files.
    reused = []
    real = poly.label_polygon_rows
    monkeypatch.setattr(poly, "label_polygon_rows", lambda *a: reused.append(real(*a)) or reused[-1])
    rerun = run_label([str(dataset)], str(tmp_path / "together"), **SETTINGS, images_per_shard=3, confidence=0.8)
    assert all(r["frames_segmented"] == 0 and not r["up_to_date"] for r in rerun["inputs"])
    assert len(reused) == len(shards) and all(reused)
    assert files(tmp_path / "together", ".segflow/cache/poly/shards") == []
    run_label([str(dataset)], str(tmp_path / "fresh"), **SETTINGS, confidence=0.8)
    pd.testing.assert_frame_equal(table(tmp_path / "together"), table(tmp_path / "fresh"))
    again = run_label([str(dataset)], str(tmp_path / "together"), **SETTINGS, images_per_shard=3, confidence=0.8)
    assert all(r["up_to_date"] for r in again["inputs"])
    # Twice the coarseness: each image's search starts from its finer polygons, all in one call.
    coarser = dict(SETTINGS, confidence=0.8, coarseness=0.01)
    run_label([str(dataset)], str(tmp_path / "together"), **coarser, images_per_shard=3)
    run_label([str(dataset)], str(tmp_path / "fresh-coarser"), **coarser)
    pd.testing.assert_frame_equal(table(tmp_path / "together"), table(tmp_path / "fresh-coarser"))
    assert not table(tmp_path / "together").equals(table(tmp_path / "fresh"))  # the polygons did change


def test_added_images_touch_only_their_shard(dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    (data / "m.mp4").unlink()
    out = tmp_path / "out"
    first = run_label([str(data)], str(out), **SETTINGS, images_per_shard=3)
    before = {p.name: p.stat().st_mtime_ns for p in files(out, "shards")}
    for i, frame in enumerate(clips.render(n_frames=2, seed=11)):  # named to come last
        Image.fromarray(frame).save(data / f"zz{i}.png")
    added = run_label([str(data)], str(out), **SETTINGS, images_per_shard=3)
    assert sum(r["frames_segmented"] for r in added["inputs"]) == 2  # the model saw the new images only
    after = {p.name: p.stat().st_mtime_ns for p in files(out, "shards")}
    assert len(set(after.items()) - set(before.items())) <= 2  # the last shard, perhaps split in two
    assert len(set(before) & set(after)) >= len(before) - 1  # the other shards untouched
    run_label([str(data)], str(tmp_path / "fresh"), **SETTINGS, images_per_shard=3)
    pd.testing.assert_frame_equal(table(out), table(tmp_path / "fresh"))
    assert len(first["inputs"]) == 9 and len(added["inputs"]) == 11
    # The images' manifest entries are one Parquet table, merged without the JSON file.
    from segflow.storage.layout import Layout
    from segflow.storage.manifest import IMAGES, read_manifest

    entries = read_manifest(Layout(out))["inputs"]
    assert sorted(entries) == sorted(r["source"] for r in added["inputs"])
    assert all(e["kind"] == "image" and e["shard"] and e["status"] == "ok" for e in entries.values())
    assert json.loads((out / ".segflow" / "manifest.json").read_text())["inputs"] == {}
    assert pq.read_metadata(out / ".segflow" / IMAGES).num_rows == 11


def test_an_image_from_another_folder_is_not_segmented_again(dataset, tmp_path):
    out = tmp_path / "out"
    run_label([str(dataset)], str(out), **SETTINGS, images_per_shard=3)
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(dataset / "a01.png", other / "copy.png")
    copied = run_label([str(other)], str(out), **SETTINGS, images_per_shard=3)
    assert copied["inputs"][0]["frames_segmented"] == 0  # its raw output came from the first run's shard
    df = pd.read_parquet(out)
    assert df["video_id"].nunique() == 10 and df.groupby("video_id")["source"].nunique().max() == 1
    assert set(df["source"].map(lambda s: s.rsplit("/", 1)[-1])) >= {"copy.png", "a00.png", "a02.png"}
    assert "a01.png" not in set(df["source"].map(lambda s: s.rsplit("/", 1)[-1]))  # one image, one set of rows
    import duckdb

    n = duckdb.sql(f"select count(*) from read_parquet('{out}/**/*.parquet')").fetchall()[0][0]
    assert n == len(df)  # the glob reads the whole table: the video's ranges and every shard


def test_one_failing_image_fails_alone(dataset, tmp_path, monkeypatch):
    real = poly.plan_polygons  # called for each image, whether polygonized alone or together

    def failing(config, work):
        if any(m.source.endswith("a02.png") for m in work.video.inputs):
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
    assert sum(r["frames_segmented"] for r in fixed["inputs"]) == 0  # every image's raw output was cached
    assert table(tmp_path / "out")["source"].nunique() == 10
    assert len(files(tmp_path / "out", "shards")) == 1  # the shard of nine, labeled one by one, is one again


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
        f"ok 10 inputs: 21 frames, {len(pd.read_parquet(tmp_path / 'out'))} instances; 10 input(s) segmented "
        f"(21 frames), 0 reused from cache; {len(list((tmp_path / 'out').rglob('*.parquet')))} label file(s) written "
        f"(each: {tmp_path / 'out'}/.segflow/manifest.json)"
    ]


def test_added_images_summed_up_as_segmented_and_the_rest_reused(dataset, tmp_path, capsys, monkeypatch):
    """Images added to a labeled folder: the total line says only they were segmented and the
    others were reused from the cache (it said "0 up to date", as if all were redone, since
    their shard's file is written again)."""
    import segflow.cli as cli

    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    monkeypatch.setattr(cli, "LISTED_INPUTS", 5)
    args = ["label", str(data), "--out", str(tmp_path / "out"), "--model", "test-color"]
    assert cli.main(args) == 0
    capsys.readouterr()
    for i, png in enumerate(sorted(data.glob("*.png"))[:2]):
        Image.open(png).rotate(180).save(data / f"added{i}.png")  # new content: not a duplicate
    assert cli.main(args) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("ok "))
    assert line.startswith("ok 12 inputs: 23 frames, ") and "; 2 input(s) segmented (2 frames), 10 reused from cache; " \
        in line, line


def test_listed_images_name_their_shard(dataset, tmp_path, capsys):
    # An image's rows are in its shard's file: its line names the shard, not "0 file(s) written".
    import segflow.cli as cli

    assert cli.main(["label", str(dataset), "--out", str(tmp_path / "out"), "--model", "test-color"]) == 0
    lines = capsys.readouterr().out.splitlines()
    images = [line for line in lines if line.startswith("ok ") and ".png:" in line]
    assert len(images) == 9 and all(", in shard " in line and "file(s) written" not in line for line in images), images
    shards = len(files(tmp_path / "out", "shards"))
    assert f"9 image(s) stored in {shards} shard(s): {shards} file(s) written" in lines
    assert any(line.startswith("ok ") and "m.mp4:" in line and "file(s) written" in line for line in lines)
