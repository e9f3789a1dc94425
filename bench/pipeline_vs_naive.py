"""The label flow vs the naive loop a user would write, on the same clip (CPU).

    python bench/pipeline_vs_naive.py [--model shapes-demo|PATH|--stand-in] [--frames 128] [--reps 2]
    python bench/pipeline_vs_naive.py --device cuda --size 720x1280 --model R50.safetensors   # on a GPU

The naive loop: read a frame with OpenCV (`cv2.VideoCapture`), run the model on it
(batch 1, torchvision's own forward), and for every detection scoring at least the
confidence (0.6) threshold its mask at 0.5, `cv2.findContours`, `cv2.approxPolyDP` with
the same tolerance as segflow's default coarseness (0.005 x the longer side), append a
row to a list, and write one Parquet file at the end. No NMS, no tracking, no holes, no
cache. The flow does all of those (plus validation and a cold cache: a fresh output
folder each time) against a temporary Prefect server started and warmed first.

Torch's thread pool behaves very differently in the main thread and in worker threads
on this shared 2-core machine (see pipeline_vs_model.py); the naive loop runs in a
worker thread like the flow's segment task (and, with --main-thread, also in the main
thread as a script would), and the target compares against its FASTEST variant.
On a GPU (`--device cuda`) the naive loop moves each frame to the GPU and each kept mask
back (`.cpu()`), as such a script does; the flow runs with its defaults there (mixed
precision, channels_last). Target: flow frames/s >= 1.0 x naive frames/s on the CPU,
>= 1.5 x on a GPU. The last line is JSON.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from common import (
    add_device_args, bench_inputs, command_line, emit, in_thread, interleaved, label_bench_parser, machine, median,
    model_label, print_table, warm_label, warm_prefect,
)


def naive_label(clip: Path, model, out: Path, confidence: float = 0.6, coarseness: float = 0.005, device: str = "cpu") -> int:
    """The loop a user would write; returns the rows written."""
    import cv2
    import numpy as np
    import pandas as pd
    import torch

    cap = cv2.VideoCapture(str(clip))
    rows = []
    index = 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        height, width = rgb.shape[:2]
        eps = coarseness * max(height, width)
        image = torch.from_numpy(rgb).to(device).permute(2, 0, 1).float() / 255.0
        with torch.inference_mode():
            pred = model([image])[0]
        for j in range(len(pred["scores"])):
            score = float(pred["scores"][j])
            if score < confidence:
                continue
            mask = (pred["masks"][j, 0] >= 0.5).cpu().numpy().astype(np.uint8)
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            polygons = []
            for c in contours:
                approx = cv2.approxPolyDP(c, eps, True).reshape(-1, 2)
                if len(approx) >= 3:
                    polygons.append(approx.astype(float).ravel().tolist())
            if not polygons:
                continue
            x0, y0, x1, y1 = (float(v) for v in pred["boxes"][j])
            rows.append({
                "frame": index, "label": int(pred["labels"][j]), "score": score,
                "x0": x0, "y0": y0, "x1": x1, "y1": y1, "polygons": polygons,
                "vertex_count": sum(len(p) // 2 for p in polygons),
                "area_px": float(mask.sum()), "width": width, "height": height,
            })
        index += 1
    cap.release()
    pd.DataFrame(rows).to_parquet(out / "labels.parquet")
    return len(rows)


def main() -> None:
    ap = label_bench_parser(__doc__)
    add_device_args(ap)
    ap.add_argument("--frames", type=int, default=128)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--main-thread", action="store_true",
                    help="also time the naive loop in the main thread (slow on a loaded machine)")
    args = ap.parse_args()

    import torch

    from segflow.cli import run_label
    from segflow.models.registry import load_model, resolve_model

    work, model_spec, size, clip, warm_clip = bench_inputs(args)
    settings = dict(model=model_spec, device=args.device)  # every other setting at its default
    target = 1.5 if torch.device(args.device).type == "cuda" else 1.0

    timings: dict = {}
    counts: dict = {}
    with warm_prefect(timings):
        timings["warm_flow_s"] = warm_label(warm_clip, work, **settings)
        model = load_model(resolve_model(model_spec), torch.device(args.device))
        model.roi_heads.score_thresh = min(model.roi_heads.score_thresh, 0.05)  # as the flow leaves it

        def flow_run(rep: int) -> None:
            out = work / f"out-flow-{rep}"
            shutil.rmtree(out, ignore_errors=True)
            item = run_label([str(clip)], str(out), **settings)["inputs"][0]
            assert item["frames_segmented"] == args.frames, item
            counts["flow_rows"] = item["instances"]

        def naive_run(rep: int) -> None:
            out = work / f"out-naive-{rep}"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            counts["naive_rows"] = naive_label(clip, model, out, device=args.device)

        runs = [("flow (end to end)", flow_run), ("naive loop, worker thread", in_thread(naive_run))]
        if args.main_thread:
            runs.append(("naive loop, main thread", naive_run))
        cpu: dict = {}
        times = interleaved(runs, args.reps, cpu)

    fps = {k: args.frames / median(v) for k, v in times.items()}
    fps_min = {k: args.frames / min(v) for k, v in times.items()}
    fpc = {k: args.frames / median(v) for k, v in cpu.items()}
    naive_best = max(v for k, v in fps.items() if k.startswith("naive"))
    naive_min = max(v for k, v in fps_min.items() if k.startswith("naive"))
    naive_fpc = max(v for k, v in fpc.items() if k.startswith("naive"))
    ratio = fps["flow (end to end)"] / naive_best
    mach = machine()
    print(f"# {mach['date']}  {mach['cpu']}  {mach['cores']} cores, torch {mach['torch']} "
          f"({mach['torch_threads']} threads), load {mach['load_avg_1m']}  | {command_line()}")
    print(f"# {args.device}{' ' + str(mach['gpu']) if mach['gpu'] and args.device != 'cpu' else ''}: model {model_label(model_spec)}, "
          f"clip {args.frames} frames {size[0]}x{size[1]} (seed {args.seed}); "
          f"flow rows {counts.get('flow_rows')}, naive rows {counts.get('naive_rows')}")
    print(f"# Prefect server start {timings['server_start_s']:.1f} s, first trivial flow {timings['first_flow_s']:.1f} s, "
          f"warm-up label run {timings['warm_flow_s']:.1f} s (not timed below)")
    rows = [[k, " ".join(f"{t:.1f}" for t in v), median(v), fps[k], fps[k] / naive_best, fps_min[k] / naive_min,
             median(cpu[k]), fpc[k] / naive_fpc] for k, v in times.items()]
    print_table(["run", "wall s (each rep)", "median s", "frames/s", "x naive (median)", "x naive (min)",
                 "CPU s (median)", "x naive (CPU)"], rows)
    emit({
        "bench": "pipeline_vs_naive",
        "model": model_label(model_spec),
        "frames": args.frames,
        "size": f"{size[0]}x{size[1]}",
        "device": args.device,
        "gpu": mach["gpu"] if args.device != "cpu" else None,
        "reps": args.reps,
        "flow_fps": round(fps["flow (end to end)"], 4),
        "naive_fps": round(naive_best, 4),
        "ratio_flow_vs_naive": round(ratio, 3),
        "ratio_flow_vs_naive_min_wall": round(fps_min["flow (end to end)"] / naive_min, 3),
        "ratio_flow_vs_naive_cpu": round(fpc["flow (end to end)"] / naive_fpc, 3),
        "target": target,
        "met": ratio >= target,
        "server_start_s": round(timings["server_start_s"], 2),
        "date": mach["date"],
        "load_avg_1m": mach["load_avg_1m"],
    })


if __name__ == "__main__":
    main()
