"""Reruns that change one cheap setting vs the first (cold) run, side by side (CPU).

    python bench/rerun.py [--model shapes-demo|PATH|--stand-in] [--frames 256] [--reps 2]

Each repetition labels the clip into a fresh folder (the first run: model and every
stage), then for each change (confidence 0.6 -> 0.7, coarseness 0.005 -> 0.01, IoU
threshold 0.3 -> 0.5, tracking on -> off) copies that folder (copy not timed) and reruns
`run_label` with only that setting changed (each timed run after `settle()`: the server
has recorded the run before, as before a user's next command): the model must not run (asserted), the
cheap stages redo what the setting touches and the label files are rewritten.

Beside each run's wall time, the CPU seconds it cost: this process's (all its threads:
the flow and its task runs) plus the temporary Prefect server's (this process's
children), each read after `settle()` before the run and again after a `settle()` once
it returned (so the server's recording of the run counts; the copy does not). CPU time
is much less sensitive than wall time to other processes sharing the cores.

Target: first run / rerun >= 20 for every change. The last line is JSON.
"""

from __future__ import annotations

import shutil
import sys
import time

from common import (
    command_line, cpu_seconds, emit, label_bench_parser, machine, make_clip, median, model_label, pick_model,
    print_table, server_cpu_seconds, settle, warm_label, warm_prefect, work_folder,
)

CHANGES = {
    "confidence 0.6->0.7": {"confidence": 0.7},
    "coarseness 0.005->0.01": {"coarseness": 0.01},
    "iou_threshold 0.3->0.5": {"iou_threshold": 0.5},
    "tracking on->off": {"tracking": False},
}


def _cpu_now() -> tuple[float, float | None]:
    """(this process's CPU s, the server's CPU s or None) so far."""
    return cpu_seconds(), server_cpu_seconds()


def _cpu_since(start: tuple[float, float | None]) -> tuple[float, float | None]:
    """CPU seconds (process, server or None) since `start`, read after the server settled."""
    settle()
    own, server = _cpu_now()
    return own - start[0], (None if server is None or start[1] is None else server - start[1])


def _total(cpu: tuple[float, float | None]) -> float:
    return cpu[0] + (cpu[1] or 0.0)


def main() -> None:
    ap = label_bench_parser(__doc__)
    ap.add_argument("--frames", type=int, default=256, help="frames of the clip (default 256: four 64-frame ranges)")
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()

    from segflow.cli import run_label

    work = work_folder(args)
    model_spec = pick_model(args, work)
    clip = make_clip(work / "clips", args.seed, args.frames)
    warm_clip = make_clip(work / "clips", args.seed + 100, 4)
    base = dict(model=model_spec, device="cpu")

    timings: dict = {}
    first: list[float] = []
    reruns: dict[str, list[float]] = {c: [] for c in CHANGES}
    first_cpu: list[tuple[float, float | None]] = []
    rerun_cpu: dict[str, list[tuple[float, float | None]]] = {c: [] for c in CHANGES}
    rows_written: dict = {}
    with warm_prefect(timings):
        warm_label(warm_clip, work, **base)
        for rep in range(args.reps):
            out = work / f"first-{rep}"
            shutil.rmtree(out, ignore_errors=True)
            settle()
            c0 = _cpu_now()
            t0 = time.perf_counter()
            item = run_label([str(clip)], str(out), **base)["inputs"][0]
            first.append(time.perf_counter() - t0)
            first_cpu.append(_cpu_since(c0))
            assert item["frames_segmented"] == args.frames
            rows_written["first"] = item["instances"]
            print(f"  rep {rep + 1}/{args.reps} first run: {first[-1]:.2f} s", file=sys.stderr, flush=True)
            order = list(CHANGES.items())
            for name, change in (order if rep % 2 == 0 else order[::-1]):
                dst = work / f"rerun-{rep}-{list(change)[0]}"
                shutil.rmtree(dst, ignore_errors=True)
                shutil.copytree(out, dst)
                settle()
                c0 = _cpu_now()
                t0 = time.perf_counter()
                item = run_label([str(clip)], str(dst), **base, **change)["inputs"][0]
                reruns[name].append(time.perf_counter() - t0)
                rerun_cpu[name].append(_cpu_since(c0))
                assert item["frames_segmented"] == 0, item  # the model did not run
                rows_written[name] = item["instances"]
                own, server = rerun_cpu[name][-1]
                print(f"  rep {rep + 1}/{args.reps} rerun {name}: {reruns[name][-1]:.2f} s "
                      f"(CPU {own:.2f} s + server {server if server is None else round(server, 2)} s)",
                      file=sys.stderr, flush=True)

    t_first = median(first)
    mach = machine()
    print(f"# {mach['date']}  {mach['cpu']}  {mach['cores']} cores, torch {mach['torch']} "
          f"({mach['torch_threads']} threads), load {mach['load_avg_1m']}  | {command_line()}")
    print(f"# model {model_label(model_spec)}, clip {args.frames} frames 480x640 (seed {args.seed}), 64 frames/range; "
          f"first run: {' '.join(f'{t:.1f}' for t in first)} s (median {t_first:.1f} s, {rows_written['first']} rows)")
    print(f"# Prefect server start {timings['server_start_s']:.1f} s, first trivial flow {timings['first_flow_s']:.1f} s (not timed)")
    table, ratios, cpu_by_change = [], {}, {}
    for name in CHANGES:
        t = median(reruns[name])
        ratios[name] = t_first / t
        cpu_by_change[name] = median([_total(c) for c in rerun_cpu[name]])
        table.append([name, rows_written.get(name), " ".join(f"{x:.2f}" for x in reruns[name]), t, ratios[name],
                      " ".join(f"{_total(c):.2f}" for c in rerun_cpu[name]), cpu_by_change[name]])
    print_table(["change", "rows", "rerun s (each rep)", "median s", "x faster", "CPU s (each rep)", "median CPU s"],
                table)
    every = [c for name in CHANGES for c in rerun_cpu[name]]
    has_server = all(c[1] is not None for c in every + first_cpu)
    worst = min(ratios.values())
    emit({
        "bench": "rerun",
        "model": model_label(model_spec),
        "frames": args.frames,
        "reps": args.reps,
        "first_run_s": round(t_first, 3),
        "ratios": {k: round(v, 2) for k, v in ratios.items()},
        "min_ratio": round(worst, 2),
        "target": 20,
        "met": worst >= 20,
        "rerun_s_median": round(median([t for name in CHANGES for t in reruns[name]]), 3),
        "first_run_cpu_s": round(median([_total(c) for c in first_cpu]), 3),
        "rerun_cpu_s_median": round(median([_total(c) for c in every]), 3),
        "rerun_process_cpu_s_median": round(median([c[0] for c in every]), 3),
        "rerun_server_cpu_s_median": round(median([c[1] for c in every]), 3) if has_server else None,
        "rerun_cpu_s": {k: round(v, 3) for k, v in cpu_by_change.items()},
        "date": mach["date"],
        "load_avg_1m": mach["load_avg_1m"],
    })


if __name__ == "__main__":
    main()
