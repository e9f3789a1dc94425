"""Chaos: kill segflow, or a part it runs on, mid-run; rerun; compare with a clean run.

    python bench/chaos.py --trials 10                  # SIGKILL segflow itself (as before)
    python bench/chaos.py --fault all --trials 3       # self, api, s3, disk, dask-worker, worker

Faults (each trial labels a synthetic clip and, mid-run, ...):
  self         SIGKILLs the `segflow label` process
  api          SIGKILLs the Prefect server it reports to (`prefect server start`, PREFECT_API_URL)
  s3           SIGKILLs the S3-compatible server (moto) holding --out (even trials) or the inputs (odd)
  disk         lets --out (a tmpfs, half the output's size) fill up
  dask-worker  SIGKILLs one of two `dask worker` processes of a `--dask-address` cluster
  worker       SIGKILLs a `prefect worker start` process with the deployment's flow run it runs
               (its figure: the fault to the run's Crashed state; then a new run resumes it)
and measures the seconds from the fault to the command's exit, counts Parquet files that
do not read back whole, brings the part back and reruns: the table must equal a clean run's.

Prints one line per trial, then as its last line one JSON object: per fault `trials`,
`identical`, `corrupt_files_seen`, `longest_fault_to_exit_s`, `clear` (trials whose
stderr held the expected one-line message and no traceback or event dump), `exit_codes`.
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

import parts

REPO = Path(__file__).resolve().parents[1]

FAULTS = ("self", "api", "s3", "disk", "dask-worker", "worker")
BOUND_S = 30.0  # the README's bound on fault-to-exit; a command still running at 3x is killed as hung
# an object store that went away: botocore retries a dead endpoint with backoff (s3fs again on top);
# a killed process worker: its run turns Crashed once heartbeats stop (README: 30 s heartbeats, an
# automation that waits 45 s, so ~75 s)
BOUNDS = {"s3": 60.0, "worker": 75.0}


def bound(fault: str) -> float:
    """The README's bound on fault-to-exit for `fault`."""
    return BOUNDS.get(fault, BOUND_S)


def label_cmd(clip, out, model: str, frames_per_range: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "segflow.cli", "label", str(clip), "--out", str(out), "--model", model,
            "--frames-per-range", str(frames_per_range), *extra]


def table(out, fs=None) -> pd.DataFrame:
    """The label table in a canonical row order (`fs`: an object store's filesystem)."""
    if fs is not None:
        import pyarrow.dataset as ds

        df = ds.dataset(str(out).removeprefix("s3://"), filesystem=fs, format="parquet").to_table().to_pandas()
    else:
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


def run_trials(clip: Path, work: Path, trials: int, model: str, env: dict, frames_per_range: int = 4, seed: int = 0,
               extra: tuple[str, ...] = ()) -> dict:
    """Kill-and-resume trials against one clean reference run (the `self` fault); `clip`
    may be a folder of images, `extra` more `segflow label` flags (`--images-per-shard`)."""
    return self_trials(clip, work, trials, model, env, frames_per_range, seed, extra)[0]


def self_trials(clip: Path, work: Path, trials: int, model: str, env: dict, frames_per_range: int = 4,
                seed: int = 0, extra: tuple[str, ...] = ()) -> tuple[dict, list[float]]:
    rng = random.Random(seed)
    ref = work / "reference"
    start = time.perf_counter()
    subprocess.run(label_cmd(clip, ref, model, frames_per_range, *extra), env=env, check=True, capture_output=True)
    clean_s = time.perf_counter() - start
    reference = table(ref)
    identical = corrupt = 0
    waits = []
    for i in range(trials):
        out = work / f"trial{i}"
        delay = rng.uniform(0.2, 0.75 * clean_s)  # the clean run paid for cold caches
        proc = subprocess.Popen(label_cmd(clip, out, model, frames_per_range, *extra), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(delay)
        killed = proc.poll() is None
        t0 = time.monotonic()
        if killed:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        waits.append(time.monotonic() - t0)
        seen = corrupt_files(out) if out.exists() else []
        corrupt += len(seen)
        done = subprocess.run(label_cmd(clip, out, model, frames_per_range, *extra), env=env, capture_output=True,
                              text=True)
        same = done.returncode == 0 and table(out).equals(reference)
        identical += same
        print(f"self {i}: killed at {delay:.1f}s ({'mid-run' if killed else 'after finishing'}), "
              f"corrupt files {len(seen)}, rerun identical: {same}", flush=True)
    return {"trials": trials, "identical": identical, "corrupt_files_seen": corrupt}, waits


def faulted_run(cmd: list[str], env: dict, log: Path, trigger, fault, out=None, bound: float = BOUND_S) -> dict:
    """Run `cmd`; once `trigger()` is true call `fault()`; wait for the command to exit.

    Returns rc (None: still running 3x `bound` after the fault, killed as hung), the
    seconds from the fault to the exit (None: it finished before the fault) and stderr."""
    with open(log, "wb") as sink:
        proc = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        t_fault = None
        while proc.poll() is None:
            if t_fault is None and trigger():
                fault()
                t_fault = time.monotonic()
            if t_fault is not None and time.monotonic() - t_fault > 3 * bound:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return {"rc": None, "fault_to_exit_s": None, "output": log.read_text(errors="replace"),
                        "exited_at": time.time()}
            time.sleep(0.05)
        end = time.monotonic()
    run = {"rc": proc.returncode, "fault_to_exit_s": None if t_fault is None else round(end - t_fault, 2),
           "output": log.read_text(errors="replace"), "exited_at": time.time()}
    run["last_write_to_exit_s"] = last_write_to_exit(run, out)
    return run


def last_write_to_exit(run: dict, out) -> float | None:
    """Seconds from the newest file under a local `out` (its last label file or manifest) to
    the command's exit: what it spent on the dead part once its own work was done."""
    if not isinstance(out, Path) or not out.exists():
        return None
    newest = max((p.stat().st_mtime for p in out.rglob("*") if p.is_file()), default=None)
    return None if newest is None else round(max(0.0, run["exited_at"] - newest), 2)


def clear(output: str, needle: str) -> bool:
    """One line with `needle`, no traceback, no Prefect event dumps."""
    return (sum(needle in line for line in output.splitlines()) == 1 and "Traceback" not in output
            and "EventsWorker" not in output and "events/in" not in output)


def label_files(out: Path) -> bool:
    return any(out.glob("*/*.parquet"))


def model_output_cached(out: Path) -> bool:
    """Whether the model's first ranges are cached: mid-run, since a video's label files
    are written together once it is fully tracked (one class per object)."""
    return any(out.glob(".segflow/cache/raw/*/*.pq"))


class Tally:
    """Per-fault figures over its trials."""

    def __init__(self, trials: int) -> None:
        self.result = {"trials": trials, "identical": 0, "corrupt_files_seen": 0, "longest_fault_to_exit_s": 0.0,
                       "longest_last_write_to_exit_s": 0.0, "clear": 0, "exit_codes": []}

    def add(self, name: str, i: int, run: dict, corrupt: int, same: bool, is_clear: bool) -> None:
        r = self.result
        after = run.get("last_write_to_exit_s")
        if after is not None:
            r["longest_last_write_to_exit_s"] = max(r["longest_last_write_to_exit_s"], after)
        r["identical"] += same
        r["corrupt_files_seen"] += corrupt
        r["clear"] += is_clear
        r["exit_codes"].append(run["rc"])
        took = run["fault_to_exit_s"]
        if run["rc"] is None:
            r["longest_fault_to_exit_s"] = float("inf")
        elif took is not None:
            r["longest_fault_to_exit_s"] = max(r["longest_fault_to_exit_s"], took)
        last = [ln for ln in run["output"].splitlines() if ln.startswith("segflow")][-1:] or ["-"]
        print(f"{name} {i}: rc {run['rc']}, fault to exit {took} s (last write to exit {after} s), "
              f"corrupt files {corrupt}, "
              f"rerun identical: {same}, one clear line: {is_clear} | {last[0][:160]}", flush=True)


def api_fault(clip, work: Path, trials: int, model: str, env: dict, fpr: int, rng) -> dict:
    """SIGKILL the Prefect server the run reports to once the model's first ranges are cached."""
    home = work / "api-home"
    server, url = parts.prefect_server(home)
    tally = Tally(trials)
    try:
        run_env = {**env, "PREFECT_API_URL": url}
        subprocess.run(label_cmd(clip, work / "api-ref", model, fpr), env=run_env, check=True, capture_output=True)
        reference = table(work / "api-ref")
        for i in range(trials):
            out = work / f"api{i}"
            extra = rng.uniform(0, 1.0)
            ready = []
            run = faulted_run(label_cmd(clip, out, model, fpr), run_env, work / f"api{i}.log",
                              lambda: model_output_cached(out) and (ready.append(1) or len(ready) > extra * 20),
                              server.kill, out)
            corrupt = len(corrupt_files(out))
            server, url = parts.prefect_server(home)  # back (on a new port)
            run_env = {**env, "PREFECT_API_URL": url}
            done = subprocess.run(label_cmd(clip, out, model, fpr), env=run_env, capture_output=True, text=True)
            same = done.returncode == 0 and table(out).equals(reference)
            finished = run["fault_to_exit_s"] is None  # done before the kill landed: nothing to say
            tally.add("api", i, run, corrupt, same, finished or clear(run["output"], "Prefect API at"))
    finally:
        server.stop()
    return tally.result


def s3_fault(clip, work: Path, trials: int, model: str, env: dict, fpr: int, rng) -> dict:
    """SIGKILL the object store holding --out (even trials) or the inputs (odd trials)."""
    port = parts.free_port()
    store, endpoint = parts.moto_server(port, work / "moto.log")
    run_env = {**env, **parts.s3_env(endpoint), "SEGFLOW_CACHE": str(work / "s3-cache")}
    tally = Tally(trials)

    def fill() -> object:
        fs = parts.s3_fs(endpoint)
        for bucket in ("inbox", "labels"):
            if not fs.exists(bucket):
                fs.mkdir(bucket)
        fs.put(str(clip), "inbox/clip.mp4")
        return fs

    try:
        fs = fill()
        subprocess.run(label_cmd("s3://inbox/clip.mp4", "s3://labels/ref", model, fpr), env=run_env, check=True,
                       capture_output=True)
        reference = table("s3://labels/ref", fs)
        for i in range(trials):
            on_out = i % 2 == 0
            out = f"s3://labels/t{i}" if on_out else work / f"s3-local{i}"
            first = (lambda: fs.exists(f"labels/t{i}/") and bool(fs.glob(f"labels/t{i}/*/*.parquet"))) if on_out \
                else (lambda: label_files(out))
            run = faulted_run(label_cmd("s3://inbox/clip.mp4", out, model, fpr), run_env, work / f"s3-{i}.log",
                              first, store.kill, out)
            corrupt = 0 if on_out else len(corrupt_files(out))  # the store's objects died with it
            store, _ = parts.moto_server(port, work / "moto.log")  # back, empty: moto keeps objects in memory
            fs = fill()
            done = subprocess.run(label_cmd("s3://inbox/clip.mp4", out, model, fpr), env=run_env, capture_output=True,
                                  text=True)
            same = done.returncode == 0 and table(out, fs if on_out else None).equals(reference)
            missing = run["rc"] != 0
            is_clear = (run["fault_to_exit_s"] is None or (clear(run["output"], "segflow: error:") if missing
                                                          else "Traceback" not in run["output"]))
            tally.add(f"s3-{'out' if on_out else 'in'}", i, run, corrupt, same, is_clear)
    finally:
        store.stop()
    return tally.result


def disk_fault(clip, work: Path, trials: int, model: str, env: dict, fpr: int, rng) -> dict:
    """--out on a tmpfs of half the output's size: the disk fills mid-run; then it grows."""
    subprocess.run(label_cmd(clip, work / "disk-ref", model, fpr), env=env, check=True, capture_output=True)
    reference = table(work / "disk-ref")
    size_kb = sum(p.stat().st_size for p in (work / "disk-ref").rglob("*") if p.is_file()) // 1024
    tally = Tally(trials)
    for i in range(trials):
        mount = work / f"disk{i}"
        with parts.tmpfs(mount, max(64, int(size_kb * rng.uniform(0.3, 0.7)))):
            out = mount / "labels"
            run = faulted_run(label_cmd(clip, out, model, fpr), env, work / f"disk{i}.log",
                              lambda: parts.disk_full(mount), lambda: None, out)
            corrupt = len(corrupt_files(out))
            parts.resize_tmpfs(mount, 4 * size_kb + 4096)
            done = subprocess.run(label_cmd(clip, out, model, fpr), env=env, capture_output=True, text=True)
            same = done.returncode == 0 and table(out).equals(reference)
            tally.add("disk", i, run, corrupt, same, run["rc"] == 1 and clear(run["output"], "No space left"))
    return tally.result


def dask_worker_fault(clip, work: Path, trials: int, model: str, env: dict, fpr: int, rng) -> dict:
    """SIGKILL one of two Dask workers once the first labels are written."""
    scheduler, address = parts.dask_scheduler(work / "dask")
    workers = [parts.dask_worker(address, work / "dask" / f"w{j}", env) for j in range(2)]
    tally = Tally(trials)
    try:
        parts.wait_for_workers(address, 2)
        subprocess.run(label_cmd(clip, work / "dask-ref", model, fpr), env=env, check=True, capture_output=True)
        reference = table(work / "dask-ref")
        for i in range(trials):
            out = work / f"dask{i}"
            victim = workers[i % 2]
            run = faulted_run(label_cmd(clip, out, model, fpr, "--runner", "dask", "--dask-address", address), env,
                              work / f"dask{i}.log", lambda: label_files(out), victim.kill, out)
            corrupt = len(corrupt_files(out))
            same_first = run["rc"] == 0 and table(out).equals(reference)  # retried on the other worker
            workers[i % 2] = parts.dask_worker(address, work / "dask" / f"w{i % 2}-{i}", env)
            parts.wait_for_workers(address, 2)
            done = subprocess.run(label_cmd(clip, out, model, fpr), env=env, capture_output=True, text=True)
            same = same_first and done.returncode == 0 and table(out).equals(reference)
            tally.add("dask-worker", i, run, corrupt, same, "Traceback" not in run["output"])
    finally:
        for part in [*workers, scheduler]:
            part.stop()
    return tally.result


def worker_fault(clip, work: Path, trials: int, model: str, env: dict, fpr: int, rng) -> dict:
    """SIGKILL a process worker (`prefect worker start`) and the flow run it started, once
    the deployment's run wrote its first labels: the run must end Crashed (segflow's
    heartbeat automation), and the next run of the deployment resumes with the clean table.
    `fault_to_exit` here is the fault to the run's Crashed state."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from segflow.faults import crash_silent_flow_runs

    server, url = parts.prefect_server(work / "worker-home")
    run_env = {**env, "PREFECT_API_URL": url, "SEGFLOW_REPO": str(REPO), "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"}
    tally = Tally(trials)
    worker = None
    try:
        for args in (["work-pool", "create", "segflow", "--type", "process"], ["deploy", "--all"]):
            subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", *args], env=run_env, cwd=REPO, check=True,
                           capture_output=True, timeout=300)
        with temporary_settings({PREFECT_API_URL: url}):
            crash_silent_flow_runs(within_s=45)
        subprocess.run(label_cmd(clip, work / "worker-ref", model, fpr), env=run_env, check=True, capture_output=True)
        reference = table(work / "worker-ref")

        def start_worker(i: int) -> parts.Part:
            return parts.Part([sys.executable, "-m", "prefect", "worker", "start", "--pool", "segflow"], run_env,
                              work / f"worker{i}.log", "prefect worker", cwd=REPO)

        def run_deployment(client, out: Path):
            deployment = client.read_deployment_by_name("label/label-dataset")
            params = {"inputs": [str(clip)], "out": str(out), "settings": {"model": model},
                      "advanced": {"frames_per_range": fpr}}
            return client.create_flow_run_from_deployment(deployment.id, parameters=params)

        with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
            for i in range(trials):
                out = work / f"worker{i}"
                worker = start_worker(i)
                flow_run = run_deployment(client, out)
                deadline = time.monotonic() + 600
                while not label_files(out) and time.monotonic() < deadline:
                    time.sleep(0.1)
                worker.kill()
                t_fault = time.monotonic()
                state = client.read_flow_run(flow_run.id).state
                while not state.is_final() and time.monotonic() - t_fault < 3 * 120:
                    time.sleep(1)
                    state = client.read_flow_run(flow_run.id).state
                run = {"rc": 0 if state.is_crashed() else None, "output": state.name,
                       "fault_to_exit_s": round(time.monotonic() - t_fault, 2)}
                corrupt = len(corrupt_files(out))
                worker = start_worker(100 + i)
                again = run_deployment(client, out)
                while not (state := client.read_flow_run(again.id).state).is_final():
                    time.sleep(1)
                same = state.is_completed() and table(out).equals(reference)
                worker.stop()
                worker = None
                tally.add("worker", i, run, corrupt, same, state.is_completed() and run["rc"] == 0)
    finally:
        if worker is not None:
            worker.stop()
        server.stop()
    return tally.result


RUNNERS = {"worker": worker_fault, "api": api_fault, "s3": s3_fault, "disk": disk_fault, "dask-worker": dask_worker_fault}


def run_fault(fault: str, clip: Path, work: Path, trials: int, model: str, env: dict, fpr: int, seed: int,
              extra: tuple[str, ...] = ()) -> dict:
    """One fault's figures, or {"skipped": reason} where its part cannot be had here."""
    work.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    try:
        if fault == "self":
            result, waits = self_trials(clip, work, trials, model, env, fpr, seed, extra)
            return {**result, "longest_fault_to_exit_s": round(max(waits, default=0.0), 2)}
        return RUNNERS[fault](clip, work, trials, model, env, fpr, rng)
    except parts.Unavailable as exc:
        return {"skipped": str(exc)}


def side_by_side(faults, args) -> dict:
    """Each fault by `python bench/chaos.py --fault F` (its own parts, API server and
    folder), `args.jobs` at a time; their trial lines pass through, their results merge."""
    from concurrent.futures import ThreadPoolExecutor

    def one(fault: str) -> dict:
        argv = [sys.executable, __file__, "--fault", fault, "--trials", str(args.trials), "--frames", str(args.frames),
                "--frames-per-range", str(args.frames_per_range), "--model", args.model, "--seed", str(args.seed)]
        done = subprocess.run(argv, capture_output=True, text=True)
        lines = done.stdout.strip().splitlines()
        print("\n".join(lines[:-1]), flush=True)
        try:
            last = json.loads(lines[-1])
        except (IndexError, ValueError):
            return {"failed": (done.stdout + done.stderr)[-2000:]}
        return last[fault]

    with ThreadPoolExecutor(args.jobs) as pool:
        return dict(zip(faults, pool.map(one, faults)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fault", default="self", choices=[*FAULTS, "all"])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--frames-per-range", type=int, default=8)
    parser.add_argument("--model", default="shapes-demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--images", action="store_true",
                        help="label the clip's frames as a folder of JPEG images (an image dataset, in shards)")
    parser.add_argument("--images-per-shard", type=int, default=8, help="with --images (default 8)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="faults tried side by side, each by a process of its own (their parts never shared)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the parts it started on the way out
    from segflow.synth import write_clip

    faults = FAULTS if args.fault == "all" else (args.fault,)
    if len(faults) > 1 and args.jobs > 1:
        print(json.dumps({"bound_s": {f: bound(f) for f in faults}, **side_by_side(faults, args)}))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        clip = write_clip(work / "clip", seed=11, n_frames=args.frames, size=(240, 320)).video
        extra: tuple[str, ...] = ()
        if args.images:  # only the `self` fault takes the flag; the others label the folder in default shards
            from images import write_frames

            write_frames(clip, work / "images")
            clip, extra = work / "images", ("--images-per-shard", str(args.images_per_shard))
        server, url = parts.prefect_server(work / "prefect-home")  # the API of every fault but `api`'s
        env = parts.base_env(PREFECT_API_URL=url, PYTHONPATH=str(REPO))
        try:
            results = {f: run_fault(f, clip, work / f, args.trials, args.model, env, args.frames_per_range, args.seed,
                                    extra) for f in faults}
        finally:
            server.stop()
    print(json.dumps({"bound_s": {f: bound(f) for f in faults}, **results}))


if __name__ == "__main__":
    main()
