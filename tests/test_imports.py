"""Commands import only what they need: a rerun the cache serves and an export import
neither torch nor torchvision (2-9 s of a command that does under a second of work)."""

from __future__ import annotations

import os
import subprocess
import sys

from prefect.settings import PREFECT_API_URL

# `segflow ARGS` in a fresh process (as users run it), then its exit status and which of
# torch and torchvision it imported
COMMAND = ("import sys\nfrom segflow.cli import main\nrc = main(sys.argv[1:])\n"
           "print(rc, sorted({'torch', 'torchvision'} & set(sys.modules)))")


def segflow(args: list[str], cwd) -> tuple[str, str]:
    """(stdout, stderr) of `segflow ARGS` run by COMMAND against the tests' Prefect server."""
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    done = subprocess.run([sys.executable, "-c", COMMAND, *[str(a) for a in args]], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)
    return done.stdout, done.stderr


def test_a_rerun_served_by_the_cache_and_an_export_import_no_torch(clip, tmp_path):
    out = tmp_path / "labels"
    label = ["label", clip, "--out", out, "--model", "shapes-demo", "--frames-per-range", "5"]
    stdout, stderr = segflow(label, tmp_path)  # the first run needs the model
    assert stdout.splitlines()[-1] == "0 ['torch', 'torchvision']", stderr
    stdout, stderr = segflow(label, tmp_path)
    assert "up to date" in stdout and stdout.splitlines()[-1] == "0 []", stderr
    stdout, stderr = segflow(["label", clip, "--out", out, "--model", "shapes-demo", "--frames-per-range", "5",
                              "--confidence", "0.7"], tmp_path)  # filter, track and persist again; no model
    assert "0 frames segmented" in stdout and stdout.splitlines()[-1] == "0 []", stderr
    stdout, stderr = segflow(["export", out, "--format", "coco", "--to", tmp_path / "coco.json"], tmp_path)
    assert (tmp_path / "coco.json").is_file() and stdout.splitlines()[-1] == "0 []", stderr
    stdout, stderr = segflow(["preview", out, "--to", tmp_path / "preview"], tmp_path)
    assert stdout.splitlines()[-1] == "0 []", stderr
