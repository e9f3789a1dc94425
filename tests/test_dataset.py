"""Datasets: many inputs, one bad one reported by name while the rest are labeled."""

from __future__ import annotations

import shutil

import pandas as pd

from segflow.cli import main
from tests import clips


def test_dataset_with_a_corrupt_input(clip, image, tmp_path, capsys, model_calls):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(clip, data / "a.mp4")
    shutil.copy(image, data / "b.png")
    clips.write_mp4(data / "c.mp4", clips.render(n_frames=6, seed=3))
    (data / "broken.mp4").write_bytes((data / "c.mp4").read_bytes()[:300])  # truncated
    out = tmp_path / "out"
    rc = main(["label", str(data), "--out", str(out), "--model", "test-color", "--frames-per-range", "5"])
    captured = capsys.readouterr()
    assert rc == 1
    error = captured.err.strip().splitlines()[-1]  # above it: Prefect's run log
    assert error.startswith("segflow: error: 1 of 4 input(s) failed") and "broken.mp4" in error
    assert "FAILED" in captured.out and captured.out.count("ok ") == 3
    df = pd.read_parquet(out)
    assert df["source"].map(lambda s: s.rsplit("/", 1)[-1]).nunique() == 3

    # Fix the bad file: the rerun labels only it.
    clips.write_mp4(data / "broken.mp4", clips.render(n_frames=7, seed=4))
    rc = main(["label", str(data), "--out", str(out), "--model", "test-color", "--frames-per-range", "5"])
    out_text = capsys.readouterr().out
    assert rc == 0
    assert out_text.count("up to date") == 3 and "7 frames segmented" in out_text
    assert pd.read_parquet(out)["source"].nunique() == 4


def test_duplicate_content_is_labeled_once(clip, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(clip, data / "a.mp4")
    shutil.copy(clip, data / "copy.mp4")
    out = tmp_path / "out"
    assert main(["label", str(data), "--out", str(out), "--model", "test-color"]) == 0
    assert "duplicate of" in capsys.readouterr().out
    assert pd.read_parquet(out)["source"].nunique() == 1


def test_list_file_input(clip, image, tmp_path):
    listing = tmp_path / "dataset.txt"
    listing.write_text(f"# my dataset\n{clip}\n\n{image}\n")
    out = tmp_path / "out"
    assert main(["label", f"@{listing}", "--out", str(out), "--model", "test-color"]) == 0
    assert pd.read_parquet(out)["source"].nunique() == 2
