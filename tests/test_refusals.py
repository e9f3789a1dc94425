"""Bad settings and inputs are refused before any work: one line, exit 2, nothing written."""

from __future__ import annotations

import pytest
import torch

from segflow.cli import main
from tests import clips


@pytest.fixture
def text_as_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n")
    return path


CASES = {
    "confidence": (["--confidence", "1.5"], "--confidence"),
    "coarseness": (["--coarseness", "-1"], "--coarseness"),
    "iou": (["--iou-threshold", "2"], "--iou-threshold"),
    "start_after_end": (["--start-frame", "5", "--end-frame", "2"], "--start-frame"),
    "start_beyond_video": (["--start-frame", "40"], "--start-frame"),
    "unknown_model": (["--model", "no-such-model"], "--model"),
    "missing_checkpoint": (["--model", "/nope/model.safetensors"], "--model"),
    "bad_device": (["--device", "gpu"], "--device"),
    "bad_precision": (["--precision", "half"], "--precision"),
}


@pytest.mark.parametrize("name", CASES)
def test_bad_setting_is_refused(name, clip, tmp_path, capsys):
    args, flag = CASES[name]
    out = tmp_path / "out"
    rc = main(["label", str(clip), "--out", str(out), "--model", "test-color", *args])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and flag in err, err
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_gpu_is_refused(clip, tmp_path, capsys):
    rc = main(["label", str(clip), "--out", str(tmp_path / "o"), "--model", "test-color", "--device", "cuda"])
    assert rc == 2 and "no CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kind", ["missing", "text_as_mp4", "empty", "folder_without_media", "unknown_suffix"])
def test_bad_input_is_refused(kind, tmp_path, capsys, text_as_mp4):
    paths = {
        "missing": tmp_path / "missing.mp4",
        "text_as_mp4": text_as_mp4,
        "empty": tmp_path / "empty.mp4",
        "folder_without_media": tmp_path / "folder",
        "unknown_suffix": tmp_path / "data.csv",
    }
    paths["empty"].touch()
    paths["folder_without_media"].mkdir()
    (paths["folder_without_media"] / "readme.txt").write_text("x")
    paths["unknown_suffix"].write_text("a,b\n")
    out = tmp_path / "out"
    rc = main(["label", str(paths[kind]), "--out", str(out), "--model", "test-color"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "input" in err, err
    assert not out.exists()


def test_end_frame_beyond_a_shorter_video_labels_it_to_its_end(clip, tmp_path, capsys):
    """The README's `--end-frame 499` on a 12-frame clip: labeled 0..11, and a rerun is up to date."""
    out = tmp_path / "out"
    assert main(["label", str(clip), "--out", str(out), "--model", "test-color", "--end-frame", "499"]) == 0
    first = capsys.readouterr().out
    assert "12 frames" in first and "12 frames segmented" in first, first
    assert main(["label", str(clip), "--out", str(out), "--model", "test-color", "--end-frame", "499"]) == 0
    assert "12 frames" in (rerun := capsys.readouterr().out) and "up to date" in rerun, rerun


def test_start_frame_beyond_one_video_of_a_dataset_skips_only_that_one(clip, tmp_path, capsys):
    short = clips.write_mp4(tmp_path / "short.mp4", clips.render(n_frames=4, seed=3))
    out = tmp_path / "out"
    args = ["label", str(clip), str(short), "--out", str(out), "--model", "test-color", "--start-frame", "6"]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"skipped {short}: no frames in range (--start-frame=6; frames 0 to 3)" in lines, lines
    assert any(ln.startswith(f"ok {clip}: 6 frames") for ln in lines), lines
    assert main(args) == 0
    assert "up to date" in capsys.readouterr().out
    # every video shorter than the start: nothing to label, refused like a lone video
    other = clips.write_mp4(tmp_path / "short2.mp4", clips.render(n_frames=5, seed=4))
    assert main(["label", str(short), str(other), "--out", str(tmp_path / "o2"), "--model", "test-color",
                 "--start-frame", "6"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--start-frame=6: beyond the last frame of every video" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o2").exists()


def test_an_undecodable_video_is_one_clean_line(tmp_path, clip, capfd):
    """Not even the decoder library's own lines (written to fd 2 from C++) get through."""
    bad = tmp_path / "cut.mp4"
    bad.write_bytes(clip.read_bytes()[: clip.stat().st_size // 3])  # header cut off: no moov atom
    rc = main(["label", str(bad), "--out", str(tmp_path / "out"), "--model", "test-color"])
    err = capfd.readouterr().err.strip()
    assert rc == 2 and err.splitlines() == [err] and "cannot decode video" in err, err
    rc = main(["label", str(clip), str(bad), "--out", str(tmp_path / "out"), "--model", "test-color", "--end-frame", "1"])
    captured = capfd.readouterr()
    assert rc == 1 and f"FAILED {bad}: cannot decode video" in captured.out
    assert "moov" not in captured.err and "video_reader" not in captured.err, captured.err


def test_earlier_output_survives_a_refused_run(clip, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["label", str(clip), "--out", str(out), "--model", "test-color", "--end-frame", "3"]) == 0
    before = sorted(p.read_bytes() for p in out.rglob("*.parquet"))
    assert main(["label", str(clip), "--out", str(out), "--model", "test-color", "--confidence", "7"]) == 2
    assert sorted(p.read_bytes() for p in out.rglob("*.parquet")) == before


def test_commands_are_imported_when_run_and_listed_with_their_own_help(capsys):
    import click

    from segflow.cli import LAZY_COMMANDS, cli

    assert main(["--help"]) == 0
    listed = capsys.readouterr().out
    ctx = click.Context(cli)
    for name, (_, short) in LAZY_COMMANDS.items():
        assert f"  {name} " in listed
        assert cli.get_command(ctx, name).help.split("\n")[0] == short  # the `--help` line is the command's own
    assert main(["no-such-command"]) == 2


def test_torchvision_weights_offline_and_not_cached_is_one_line(clip, tmp_path, capsys, monkeypatch):
    """--model coco-r50 with an empty weights cache and no network: segflow's one line, exit 2
    (torch.hub's own "Downloading: ..." line, on stdout, is not printed before it), nothing written."""
    import urllib.error

    import torch.hub

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "urlopen", offline)
    out = tmp_path / "out"
    rc = main(["label", str(clip), "--out", str(out), "--model", "coco-r50"])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "Downloading" not in captured.out + captured.err
    assert "--model coco-r50" in err and str(tmp_path / "torch" / "hub" / "checkpoints") in err and "URLError" in err
    assert not out.exists()
