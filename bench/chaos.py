"""Chaos: SIGKILL the label process at random moments, rerun, compare with a clean run.

    python bench/chaos.py --trials 10            # shapes-demo on a synthetic clip

Prints one line per trial, then as its last line:
    {"trials": N, "identical": N, "corrupt_files_seen": 0}
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]


def label_cmd(clip: Path, out: Path, model: str, frames_per_range: int) -> list[str]:
    return [sys.executable, "-m", "segflow.cli", "label", str(clip), "--out", str(out), "--model", model,
            "--frames-per-range", str(frames_per_range)]


def table(out: Path) -> pd.DataFrame:
    """The label table in a canonical row order."""
    df = pd.read_parquet(out)
    return df.sort_values(["source", "frame", "object_id"]).reset_index(drop=True)


def corrupt_files(out: Path) -> list[Path]:
    """Visible Parquet files (label table and stage caches) that do not read back whole."""
    bad = []
    for path in [*out.rglob("*.parquet"), *out.rglob("*.pq")]:
        try:
            pq.read_table(path)
        except Exception:
            bad.append(path)
    return bad


def run_trials(clip: Path, work: Path, trials: int, model: str, env: dict, frames_per_range: int = 4, seed: int = 0) -> dict:
    """Kill-and-resume trials against one clean reference run."""
    rng = random.Random(seed)
    ref = work / "reference"
    start = time.perf_counter()
    subprocess.run(label_cmd(clip, ref, model, frames_per_range), env=env, check=True, capture_output=True)
    clean_s = time.perf_counter() - start
    reference = table(ref)
    identical = corrupt = 0
    for i in range(trials):
        out = work / f"trial{i}"
        delay = rng.uniform(0.2, 0.75 * clean_s)  # the clean run paid for cold caches
        proc = subprocess.Popen(label_cmd(clip, out, model, frames_per_range), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(delay)
        killed = proc.poll() is None
        if killed:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        seen = corrupt_files(out) if out.exists() else []
        corrupt += len(seen)
        done = subprocess.run(label_cmd(clip, out, model, frames_per_range), env=env, capture_output=True, text=True)
        same = done.returncode == 0 and table(out).equals(reference)
        identical += same
        print(f"trial {i}: killed at {delay:.1f}s ({'mid-run' if killed else 'after finishing'}), "
              f"corrupt files {len(seen)}, rerun identical: {same}", flush=True)
    return {"trials": trials, "identical": identical, "corrupt_files_seen": corrupt}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--model", default="shapes-demo")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from segflow.synth import write_clip

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clip = write_clip(work / "clip", seed=11, n_frames=args.frames, size=(480, 640)).video
        env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        result = run_trials(clip, work, args.trials, args.model, env, frames_per_range=8, seed=args.seed)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
