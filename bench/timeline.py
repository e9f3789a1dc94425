"""Where a label run's wall time goes: every task run of one flow, on one time axis.

    python bench/timeline.py [--model shapes-demo|PATH] [--frames 256] [--size 480x640] [--device cpu|cuda]

A warm-up run first (imports, model load, first task runs), then one cold-cache run;
its task runs are read back from the Prefect API and printed in start order with their
start offset from the flow's start, their duration and how long each waited between
being created and running. Diagnostic only (no target): it shows which stage holds the
flow back when the end-to-end rate is below the model's.
"""

from __future__ import annotations

import time
from collections import defaultdict

from common import (
    add_device_args, bench_inputs, command_line, emit, label_bench_parser, machine, print_table, warm_label,
    warm_prefect,
)


def task_runs_of(flow_run_id) -> list:
    """The flow run's task runs, as the API has them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])), limit=200)


def latest_flow_run():
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(sort=FlowRunSort.START_TIME_DESC, limit=1)[0]


def main() -> None:
    ap = label_bench_parser(__doc__)
    add_device_args(ap)
    ap.add_argument("--frames", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=None, help="frames per model call (default: the flow's, 2 on the CPU, 4 on a GPU)")
    ap.add_argument("--frames-per-range", type=int, default=64)
    args = ap.parse_args()

    from segflow.cli import run_label
    from segflow.job import default_batch_size

    work, model_spec, size, clip, warm_clip = bench_inputs(args)
    args.batch_size = args.batch_size or default_batch_size(args.device)
    settings = dict(model=model_spec, batch_size=args.batch_size, frames_per_range=args.frames_per_range, device=args.device)
    timings: dict = {}
    with warm_prefect(timings):
        warm_label(warm_clip, work, **settings)
        t0 = time.perf_counter()
        run_label([str(clip)], str(work / f"out-timeline-{time.time_ns()}"), **settings)
        wall = time.perf_counter() - t0
        time.sleep(2)  # task run states reach the API through an event stream
        fr = latest_flow_run()
        runs = task_runs_of(fr.id)

    origin = fr.start_time
    rows, per_stage = [], defaultdict(float)
    for tr in sorted(runs, key=lambda t: (t.start_time or t.expected_start_time)):
        start = tr.start_time or tr.expected_start_time
        took = (tr.end_time - tr.start_time).total_seconds() if tr.end_time and tr.start_time else float("nan")
        waited = (start - tr.created).total_seconds() if tr.created else float("nan")
        stage = tr.task_key.split("-")[0] if tr.task_key else tr.name
        per_stage[tr.name.split("-")[0]] += took
        rows.append([tr.name, f"{(start - origin).total_seconds():.3f}", f"{took:.3f}", f"{waited:.3f}", stage])
    flow_s = (fr.end_time - fr.start_time).total_seconds() if fr.end_time else float("nan")
    mach = machine()
    print(f"# {mach['date']}  {mach['cpu']}  {mach['cores']} cores | {command_line()}")
    print(f"# {args.frames} frames {size[0]}x{size[1]} on {args.device}: run_label {wall:.2f} s, flow run {flow_s:.2f} s "
          f"(API start to end), {args.frames / wall:.1f} frames/s")
    print_table(["task run", "start s", "took s", "created->start s", "task"], rows)
    print_table(["stage", "task seconds (sum)"], sorted(per_stage.items(), key=lambda kv: -kv[1]))
    emit({"bench": "timeline", "frames": args.frames, "size": f"{size[0]}x{size[1]}", "device": args.device,
          "wall_s": round(wall, 3), "flow_run_s": round(flow_s, 3),
          "stage_task_s": {k: round(v, 3) for k, v in per_stage.items()}})


if __name__ == "__main__":
    main()
