"""Wall seconds of the commands users repeat most, as users run them (each a fresh process):
an up-to-date `segflow label` rerun and a `segflow export --format coco`, first with no
Prefect server configured (each command starts a temporary one), then with
`segflow server start` running. Prints one JSON line.

    python bench/cli.py [--frames 24] [--repeat 3] [--workdir DIR] [--baseline-python PY]

Targets (issue 17): with a server <= 3 s (label rerun) and <= 2 s (export); without
<= 8 s and <= 6 s. Each figure is the median of --repeat runs. With --baseline-python
(the python of another checkout's environment, e.g. main's), every timed command is run
by it too, alternated with this one (A B A B ...) on the same labels and server, and its
figures printed under "baseline".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS = {"server": {"label_rerun": 3.0, "export_coco": 2.0}, "no_server": {"label_rerun": 8.0, "export_coco": 6.0}}


def segflow(args: list[str], env: dict, python: str = sys.executable) -> float:
    """Run `segflow ARGS` in a fresh process; its wall seconds (raises on a non-zero exit)."""
    started = time.perf_counter()
    done = subprocess.run([python, "-m", "segflow.cli", *args], env=env, capture_output=True, text=True,
                          cwd=tempfile.gettempdir())  # (a checkout's root would shadow its installed package)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"segflow {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=24, help="frames of the synthetic clip")
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure (the median is printed)")
    ap.add_argument("--workdir", default=None, help="folder for the clip, labels and server (default: a temporary one)")
    ap.add_argument("--baseline-python", default=None, help="also time each command with this python, alternated")
    a = ap.parse_args()
    work = Path(a.workdir or tempfile.mkdtemp(prefix="segflow-bench-cli-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(SEGFLOW_HOME=str(work / "home"), PREFECT_HOME=str(work / "prefect-home"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false")

    from segflow.synth import write_clip

    clip = write_clip(work / "clip", seed=7, n_frames=a.frames, size=(240, 320), name="clip").video
    labels = work / "labels"
    label = ["label", str(clip), "--out", str(labels)]
    export = ["export", str(labels), "--format", "coco", "--to", str(work / "coco.json")]
    first = segflow(label, env)  # labels the clip (not timed as a rerun)

    pythons = [sys.executable] + ([a.baseline_python] if a.baseline_python else [])
    figures: dict = {}
    baseline: dict = {}

    def measure(key: str) -> None:
        for name, args in (("label_rerun", label), ("export_coco", export)):
            runs = [[segflow(args, env, py) for py in pythons] for _ in range(a.repeat)]  # A B A B ...
            figures.setdefault(key, {})[name] = round(statistics.median(r[0] for r in runs), 2)
            if a.baseline_python:
                baseline.setdefault(key, {})[name] = round(statistics.median(r[1] for r in runs), 2)

    measure("no_server")
    segflow(["server", "start"], env)
    try:
        measure("server")
    finally:
        subprocess.run([sys.executable, "-m", "segflow.cli", "server", "stop"], env=env, capture_output=True,
                       cwd=tempfile.gettempdir())
    met = all(figures[k][c] <= TARGETS[k][c] for k in TARGETS for c in TARGETS[k])
    print(json.dumps({"bench": "cli", "frames": a.frames, "repeat": a.repeat, "first_label_s": round(first, 2),
                      **figures, "targets": TARGETS, "met": met, "load1": round(os.getloadavg()[0], 1),
                      **({"baseline": baseline | {"python": a.baseline_python}} if a.baseline_python else {})}))


if __name__ == "__main__":
    main()
