"""Peak RSS labeling a long video vs a short one, each in its own process (CPU).

    python bench/memory.py [--model shapes-demo|PATH|--stand-in] [--frames-small 200] [--frames-large 2000]
                           [--height 240 --width 320]

Two synthetic clips of the same scene (seed; the short one is the first frames of the
long one), labeled with every setting at its default by `run_label` in a fresh Python
process each, one after the other. The parent starts one temporary Prefect server that
both children use (PREFECT_API_URL), so the server's own memory is not counted. Peak
RSS is the child's `ru_maxrss` from `os.wait4` (that child alone, its own children
included); psutil also samples its RSS every 0.5 s to show how it evolves.

Frames are 240x320 by default to keep clip synthesis and decoding short (the model
upsamples them to its 480x640 input, so inference costs the same per frame); with the
defaults the whole run takes about 6-8 minutes on this 2-core machine.
Target: peak RSS (large) <= 1.2 x peak RSS (small). The last line is JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from common import (
    command_line, emit, label_bench_parser, machine, make_clip, model_label, pick_model, print_table,
    warm_prefect, work_folder,
)

CHILD = r"""
import json, resource, time
from segflow.cli import run_label
t0 = time.perf_counter()
result = run_label([{clip!r}], {out!r}, model={model!r}, device="cpu")
item = result["inputs"][0]
print(json.dumps({{"wall_s": time.perf_counter() - t0, "frames": item["frames"], "instances": item["instances"],
                  "self_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}))
"""


def run_child(clip: Path, out: Path, model: str, log: Path) -> dict:
    """Label in a child process; its peak RSS from wait4 and an RSS trace from psutil."""
    import psutil

    code = CHILD.format(clip=str(clip), out=str(out), model=model)
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=fh, stderr=subprocess.STDOUT, env=os.environ.copy())
        trace: list[tuple[float, int]] = []
        done = threading.Event()

        def sample() -> None:
            p = psutil.Process(proc.pid)
            t0 = time.perf_counter()
            while not done.is_set():
                try:
                    rss = p.memory_info().rss
                except psutil.Error:
                    return
                if rss:  # 0 once the child has exited and not yet been reaped
                    trace.append((time.perf_counter() - t0, rss))
                done.wait(0.5)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; keep Popen consistent
        done.set()
        sampler.join()
    text = log.read_text()
    if proc.returncode != 0:
        sys.exit(f"child failed ({proc.returncode}) on {clip}:\n{text[-3000:]}")
    info = json.loads([ln for ln in text.splitlines() if ln.startswith("{")][-1])
    info["maxrss_mb"] = usage.ru_maxrss / 1024  # KiB on Linux
    info["trace"] = trace
    return info


def quartiles(trace: list[tuple[float, int]]) -> str:
    if not trace:
        return "-"
    n = len(trace)
    picks = [trace[min(n - 1, int(q * (n - 1)))][1] / 2**20 for q in (0.25, 0.5, 0.75, 1.0)]
    return " / ".join(f"{v:.0f}" for v in picks)


def main() -> None:
    ap = label_bench_parser(__doc__, seed=5)
    ap.add_argument("--frames-small", type=int, default=200)
    ap.add_argument("--frames-large", type=int, default=2000)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--width", type=int, default=320)
    args = ap.parse_args()

    work = work_folder(args)
    model_spec = pick_model(args, work)
    size = (args.height, args.width)
    t0 = time.perf_counter()
    clips = {n: make_clip(work / "clips", args.seed, n, size) for n in (args.frames_small, args.frames_large)}
    synth_s = time.perf_counter() - t0
    print(f"  clips ready in {synth_s:.0f} s", file=sys.stderr, flush=True)

    timings: dict = {}
    results = {}
    with warm_prefect(timings):
        from prefect.settings import PREFECT_API_URL

        os.environ["PREFECT_API_URL"] = PREFECT_API_URL.value()  # children share this server
        for n, clip in clips.items():
            out = work / f"out-{n}"
            import shutil

            shutil.rmtree(out, ignore_errors=True)
            results[n] = run_child(clip, out, model_spec, work / f"child-{n}.log")
            print(f"  {n} frames: {results[n]['wall_s']:.0f} s, peak RSS {results[n]['maxrss_mb']:.0f} MiB",
                  file=sys.stderr, flush=True)

    small, large = results[args.frames_small], results[args.frames_large]
    ratio = large["maxrss_mb"] / small["maxrss_mb"]
    mach = machine()
    print(f"# {mach['date']}  {mach['cpu']}  {mach['cores']} cores, load {mach['load_avg_1m']}  | {command_line()}")
    print(f"# model {model_label(model_spec)}, clips {args.height}x{args.width} (seed {args.seed}), every setting default"
          "; "
          f"clip synthesis {synth_s:.0f} s, Prefect server start {timings['server_start_s']:.1f} s (not counted)")
    rows = [[f"{n} frames", r["instances"], r["wall_s"], r["maxrss_mb"], r["self_maxrss_kb"] / 1024, quartiles(r["trace"])]
            for n, r in results.items()]
    print_table(["run", "rows", "wall s", "peak RSS MiB (wait4)", "peak RSS MiB (self)", "RSS MiB at 25/50/75/100% of run"], rows)
    emit({
        "bench": "memory",
        "model": model_label(model_spec),
        "size": f"{args.height}x{args.width}",
        "frames_small": args.frames_small,
        "frames_large": args.frames_large,
        "peak_rss_small_mib": round(small["maxrss_mb"], 1),
        "peak_rss_large_mib": round(large["maxrss_mb"], 1),
        "ratio_large_vs_small": round(ratio, 3),
        "target": 1.2,
        "met": ratio <= 1.2,
        "date": mach["date"],
    })


if __name__ == "__main__":
    main()
