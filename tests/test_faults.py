"""Bad input, each refused with one clear line (or handled), nothing half-written."""

from __future__ import annotations

import errno
import json
import os
import pickle
import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from segflow.cli import main
from tests import clips


def run(args, out, capsys) -> tuple[int, str]:
    rc = main(["label", *map(str, args), "--out", str(out), "--model", "test-color"])
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err[-1] if err else ""


def refused(args, out, capsys, needle: str) -> None:
    rc, err = run(args, out, capsys)
    assert rc == 2 and err.startswith("segflow: error:") and needle in err, err
    assert not out.exists()


# ---- images that are unusual but valid: handled -----------------------------------------


def colored(mode: str) -> Image.Image:
    rgb = clips.render(n_frames=1)[0]
    if mode == "RGBA":
        return Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]), "RGBA")
    if mode == "L":
        return Image.fromarray(rgb).convert("L")
    if mode == "I;16":
        return Image.fromarray((rgb[..., 0].astype(np.uint16) * 257))
    raise ValueError(mode)


@pytest.mark.parametrize("mode,classes", [("RGBA", {"circle", "ring", "square"}), ("L", set()), ("I;16", set())])
def test_unusual_images_are_labeled(mode, classes, tmp_path, capsys):
    path = tmp_path / "img.png"
    colored(mode).save(path)
    rc, _ = run([path], tmp_path / "out", capsys)
    assert rc == 0
    df = pd.read_parquet(tmp_path / "out")
    assert set(df["class_name"]) == classes


def test_one_pixel_image(tmp_path, capsys):
    Image.new("RGB", (1, 1), (200, 30, 30)).save(tmp_path / "dot.png")
    rc, _ = run([tmp_path / "dot.png"], tmp_path / "out", capsys)
    assert rc == 0 and len(pd.read_parquet(tmp_path / "out")) == 0


def test_very_large_image_is_refused(tmp_path, capsys):
    Image.new("L", (9000, 8000)).save(tmp_path / "huge.png")
    refused([tmp_path / "huge.png"], tmp_path / "out", capsys, "pixel limit")


def test_variable_frame_rate_video_keeps_its_timestamps(clip, tmp_path, capsys):
    vfr = tmp_path / "vfr.mp4"
    expr = "if(lt(N,6),N*0.1,0.6+(N-6)*0.3)/TB"  # 10 fps, then 3.3 fps
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-i", str(clip), "-vf", f"setpts='{expr}'",
         "-fps_mode", "vfr", "-c:v", "libx264", "-crf", "10", str(vfr)],
        check=True,
    )
    rc, _ = run([vfr], tmp_path / "out", capsys)
    assert rc == 0
    times = pd.read_parquet(tmp_path / "out").groupby("frame")["timestamp_s"].first()
    assert len(times) == 12
    assert np.allclose(np.diff(times.to_numpy()), [0.1] * 6 + [0.3] * 5, atol=0.01)


# ---- refused before any work -------------------------------------------------------------


def test_truncated_video(clip, tmp_path, capsys):
    data = clip.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) * 6 // 10])
    refused([tmp_path / "cut.mp4"], tmp_path / "out", capsys, "cut.mp4")


def test_corrupt_checkpoint(clip, tmp_path, capsys):
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"\x00garbage" * 100)
    rc = main(["label", str(clip), "--out", str(tmp_path / "out"), "--model", str(bad)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "model.safetensors" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_checkpoint_with_another_class_count(clip, tmp_path, capsys):
    from segflow.models.arch import build_model
    from segflow.models.checkpoint import CheckpointMeta, save_checkpoint

    path = tmp_path / "five.safetensors"
    save_checkpoint(path, build_model("maskrcnn_small", 4), CheckpointMeta("maskrcnn_small", ("a", "b", "c", "d", "e"), {}))
    rc = main(["label", str(clip), "--out", str(tmp_path / "out"), "--model", str(path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "does not fit" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


class Evil:
    def __reduce__(self):
        return (exec, ("open('/tmp/segflow-pwned', 'w').write('x')",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # the crafted file uses protocol 4
def test_checkpoint_pickle_carrying_code_is_refused(clip, tmp_path, capsys):
    import os

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"state_dict": Evil()}))
    if os.path.exists("/tmp/segflow-pwned"):
        os.remove("/tmp/segflow-pwned")
    rc = main(["label", str(clip), "--out", str(tmp_path / "out"), "--model", str(path)])
    assert rc == 2 and "weights-only" in capsys.readouterr().err
    assert not os.path.exists("/tmp/segflow-pwned")


def test_ontology_missing_a_class_drops_and_counts_it(clip, tmp_path, capsys):
    onto = tmp_path / "onto.json"
    onto.write_text(json.dumps({"objects": [
        {"class": "circle", "name": "Ball", "featureHash": "aaaa1111", "color": "#ff0000"},
        {"class": "ring", "name": "Donut", "featureHash": "bbbb2222", "color": "#0000ff"},
    ]}))
    rc = main(["label", str(clip), "--out", str(tmp_path / "out"), "--model", "test-color", "--ontology", str(onto)])
    assert rc == 0
    df = pd.read_parquet(tmp_path / "out")
    assert set(df["class_name"]) == {"circle", "ring"} and set(df["feature_hash"]) == {"aaaa1111", "bbbb2222"}
    manifest = json.loads((tmp_path / "out" / ".segflow" / "manifest.json").read_text())
    assert next(iter(manifest["inputs"].values()))["dropped_unmapped"] == 12  # the square on every frame


def test_ontology_naming_an_unknown_class(clip, tmp_path, capsys):
    onto = tmp_path / "onto.json"
    onto.write_text(json.dumps({"objects": [{"class": "zebra", "name": "Zebra"}]}))
    refused([clip, "--ontology", onto], tmp_path / "out", capsys, "zebra")


def test_output_folder_under_a_file(clip, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    rc, err = run([clip], tmp_path / "file" / "out", capsys)
    assert rc == 2 and "--out" in err


def test_disallowed_scheme(tmp_path, capsys):
    refused(["http://example.com/video.mp4"], tmp_path / "out", capsys, "not allowed")


def test_input_names_never_steer_output_paths(clip, tmp_path, capsys):
    weird = tmp_path / "..%2F..%2Fescape" / ".." / "..evil name;rm -rf.mp4"
    weird.parent.mkdir(parents=True, exist_ok=True)
    weird.write_bytes(clip.read_bytes())
    out = tmp_path / "deep" / "out"
    rc, _ = run([weird], out, capsys)
    assert rc == 0
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.stat().st_mtime_ns >= weird.stat().st_mtime_ns]
    assert written and all(out in p.parents or p == weird.resolve() for p in written)


# ---- errors a retry cannot fix: not retried, the model never run again, one line, exit 1 ---


def test_output_that_fails_mid_run_stops_the_run_without_retries(clip, tmp_path, capsys, monkeypatch, model_calls):
    """The disk fills after the first two writes: exit 1 with one line naming --out, the
    model run once per range at most (no retry of a range), nothing torn."""
    import errno

    import pyarrow.parquet as pq

    import segflow.storage.atomic as atomic

    out = tmp_path / "out"
    assert main(["label", str(clip), "--out", str(tmp_path / "clean"), "--model", "test-color",
                 "--frames-per-range", "2"]) == 0
    clean_calls = model_calls()
    capsys.readouterr()
    model_calls()
    writes = []

    real_write = atomic._write  # every Parquet file's bytes, label file or cache file

    def fill_up(table, where, cache):
        writes.append(where)
        if len(writes) > 2:
            raise OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No space left on device")
        return real_write(table, where, cache)

    from tests.color_model import ColorModel

    ColorModel.calls = 0
    monkeypatch.setattr(atomic, "_write", fill_up)
    rc = main(["label", str(clip), "--out", str(out), "--model", "test-color", "--frames-per-range", "2"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("segflow")]
    assert rc == 1, err
    assert err == [f"segflow: error: --out {out}: cannot write to the output folder (No space left on device); "
                   "the ranges written are complete, a rerun resumes after them"]
    assert 0 < ColorModel.calls < clean_calls  # stopped early, nothing segmented twice
    assert not list(out.rglob("*.tmp"))
    for path in out.rglob("*.parquet"):
        pq.read_table(path)


def test_retry_policy_skips_what_no_retry_fixes():
    import errno

    from prefect.states import Failed

    from segflow.errors import OutputFailed
    from segflow.faults import retryable

    def verdict(exc):
        return retryable(None, None, Failed(data=exc))

    assert verdict(RuntimeError("CUDA error: launch failure"))
    assert verdict(OSError(errno.EIO, "Input/output error"))
    assert not verdict(OutputFailed("cannot write x (No space left on device)"))
    assert not verdict(OSError(errno.ENOSPC, "No space left on device"))
    assert not verdict(PermissionError(errno.EACCES, "Permission denied"))


def test_output_folder_where_no_folder_can_be_made(clip, tmp_path, capsys, model_calls):
    """As root every permission check passes for /proc; the probe makes a folder to know."""
    rc = main(["label", str(clip), "--out", "/proc/segflow-out", "--model", "test-color"])
    err = capsys.readouterr().err.strip().splitlines()
    # one line naming the path and the cause (was `folder /proc is not writable (No such file or directory)`)
    assert rc == 2 and err == ["segflow: error: --out /proc/segflow-out: cannot create the folder: "
                               "/proc does not allow new folders"], err
    assert model_calls() == 0 and not list(Path("/proc").glob(".segflow-probe-*"))


def test_train_and_synth_refuse_an_output_where_no_folder_can_be_made(tmp_path, capsys):
    """Before any work, as `segflow label` (they raised FileNotFoundError tracebacks, train's after
    starting a Prefect server)."""
    assert main(["synth", "--seed", "1", "--frames", "2", "--width", "64", "--height", "64",
                 "--out", str(tmp_path / "data")]) == 0
    capsys.readouterr()
    for args, out in ((["synth", "--seed", "1", "--frames", "2"], "/proc/segflow-synth"),
                      (["train", "--data", str(tmp_path / "data"), "--steps", "1"], "/proc/segflow-train/m.safetensors")):
        assert main([*args, "--out", out]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"segflow: error: --out {out}: cannot create the folder: /proc does not allow new folders"], err


@pytest.mark.parametrize("code, cause", [
    (errno.EROFS, "/data is on a read-only file system"), (errno.EACCES, "no permission to write in /data"),
    (errno.ENOSPC, "no space left in /data"), (errno.ENOENT, "/data does not allow new folders"),
    (errno.EIO, "/data refuses new folders (Input/output error)")])
def test_an_unwritable_output_folder_is_named_with_its_cause(monkeypatch, code, cause):
    """The probe's OSError in words, for a folder to make and for an existing one."""
    import tempfile

    from segflow.errors import SegflowError
    from segflow.storage.layout import check_folder_writable

    def refuse(**kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(Path, "exists", lambda self: str(self) in ("/", "/data"))
    monkeypatch.setattr(Path, "is_dir", lambda self: True)
    monkeypatch.setattr(os, "access", lambda *a: True)
    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    with pytest.raises(SegflowError) as made:
        check_folder_writable(Path("/data/labels"), "--out /data/labels")
    assert str(made.value) == f"--out /data/labels: cannot create the folder: {cause}"
    with pytest.raises(SegflowError) as existing:
        check_folder_writable(Path("/data"), "--out /data")
    assert str(existing.value) == f"--out /data: cannot write in the folder: {cause}"


# ---- SIGTERM and SIGINT mid-run: one line, a prompt exit, a rerun resumes ---------------------


@pytest.mark.parametrize("target,sig,api", [("group", "SIGTERM", False), ("pid", "SIGTERM", False),
                                            ("group", "SIGINT", False), ("pid", "SIGTERM", True)])
def test_signal_mid_run_aborts_at_once_and_a_rerun_resumes(target, sig, api, tmp_path):
    """`segflow label` with no server (Prefect's temporary one, a child of the command), sent
    SIGTERM (`timeout`, a job scheduler: the whole process group; `kill`: the command alone)
    or SIGINT (Ctrl-C) once the model's first ranges are cached: `segflow: aborted` as the
    one segflow line, no traceback, exit 128 + signal within seconds (SIGTERM used to go on
    for minutes and exit 1; Ctrl-C took ~25 s), no temporary file, no server left behind;
    the rerun reuses the cached ranges and gives the uninterrupted run's table."""
    import signal
    import time

    import psutil

    from tests.conftest import REPO, bench_module

    chaos = bench_module("chaos")
    env = {**os.environ, "PYTHONPATH": str(REPO), "SEGFLOW_PLUGINS": "tests.color_model",
           "SEGFLOW_TEST_MODEL_DELAY": "0.3"}
    from prefect.settings import PREFECT_API_URL

    env.pop("PREFECT_API_URL", None)  # the reported case: Prefect's temporary server
    if api:  # a server of its own (`segflow server`): told the run crashed
        env["PREFECT_API_URL"] = PREFECT_API_URL.value()
    clip = clips.write_mp4(tmp_path / "clip.mp4", clips.render(n_frames=48, seed=5))
    out, log = tmp_path / "out", tmp_path / "log.txt"
    signum = getattr(signal, sig)
    with open(log, "wb") as sink:
        proc = subprocess.Popen(chaos.label_cmd(clip, out, "test-color", 4), env=env, stdout=sink,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 240
            while not chaos.model_output_cached(out) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert proc.poll() is None, "the run ended before the signal: make it longer"
            children = psutil.Process(proc.pid).children(recursive=True)
            sent = time.monotonic()
            (os.killpg if target == "group" else os.kill)(proc.pid, signum)
            rc = proc.wait(timeout=60)
            took = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    output = log.read_text(errors="replace")
    assert rc == 128 + signum, output[-3000:]
    assert took < 10, took
    assert output.splitlines()[-1] == "segflow: aborted" and chaos.clear(output, "segflow:"), output[-3000:]
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    assert chaos.corrupt_files(out) == []
    time.sleep(0.5)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]

    if api:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.sorting import FlowRunSort

        with get_client(sync_client=True) as client:
            last = client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)[0]
        assert last.state.is_crashed() and "SIGTERM" in (last.state.message or ""), last.state
    env["PREFECT_API_URL"] = PREFECT_API_URL.value()  # the session's test server for the reruns
    rerun = subprocess.run([*chaos.label_cmd(clip, out, "test-color", 4)], env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    import re

    segmented = [int(n) for n in re.findall(r"(\d+) frames segmented", rerun.stdout)]
    assert len(segmented) == 1 and 0 < segmented[0] < 48, rerun.stdout  # the cached ranges are reused
    reference = tmp_path / "reference"
    subprocess.run(chaos.label_cmd(clip, reference, "test-color", 4), env={**env, "SEGFLOW_TEST_MODEL_DELAY": "0"},
                   check=True, capture_output=True)
    assert chaos.table(out).equals(chaos.table(reference))
