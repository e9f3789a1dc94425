"""An image dataset vs the same frames as one video, side by side (CPU); with `--images N`,
an image dataset at scale against the bare model (`bench/image_dataset.py`).

    python bench/images.py [--model shapes-demo|PATH|--stand-in] [--frames 64] [--reps 2]
    python bench/images.py --images 10000 [--size 120x160] [--rss-reference 1000]

The bench clip's frames are written as JPEG files into a folder (a dataset of that many
images). Each repetition labels the video and the folder into fresh output folders (first
runs: model and every stage), then reruns each with confidence 0.6 -> 0.7 (the model must
not run). An image is a one-frame input: per-input costs (task runs, cache files, the
summary) are what this measures; consecutive images share task runs (`flows/label.py`).
The last line is JSON: images' frames/s as a fraction of the video's, and the reruns.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from common import (
    command_line, emit, interleaved, label_bench_parser, machine, make_clip, median, model_label, pick_model,
    print_table, settle, warm_label, warm_prefect, work_folder,
)


def write_frames(clip: Path, folder: Path) -> int:
    """Every frame of `clip` as `folder/fNNNNN.jpg`; returns how many."""
    import decord
    from PIL import Image

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    reader = decord.VideoReader(str(clip))
    for i in range(len(reader)):
        Image.fromarray(reader[i].asnumpy()).save(folder / f"f{i:05d}.jpg", quality=95)
    return len(reader)


def main() -> None:
    ap = label_bench_parser(__doc__)
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--images", type=int, default=0, help="an image dataset of this many images (see bench/image_dataset.py)")
    ap.add_argument("--size", default="120x160", help="with --images: height x width (default 120x160)")
    ap.add_argument("--rss-reference", type=int, default=1000, help="with --images: images of the peak RSS reference run")
    ap.add_argument("--drive", default=None, help=argparse.SUPPRESS)  # bench/image_dataset.py's flow process
    args = ap.parse_args()
    from image_dataset import dataset_bench, drive

    if args.drive:
        emit(drive(json.loads(args.drive)))
        return

    from segflow.cli import run_label

    work = work_folder(args)
    model_spec = pick_model(args, work)
    if args.images:
        mach = machine()
        print(f"# {mach['date']}  {mach['cpu']}  {mach['cores']} cores, torch {mach['torch']}, load "
              f"{mach['load_avg_1m']}  | {command_line()}")
        emit({"bench": "images", "model": model_label(model_spec), **dataset_bench(args, work, model_spec),
              "date": mach["date"], "load_avg_1m": mach["load_avg_1m"], "load_avg_1m_after": machine()["load_avg_1m"]})
        return
    clip = make_clip(work / "clips", args.seed, args.frames)
    images = work / "images"
    n = write_frames(clip, images)
    base = dict(model=model_spec, device="cpu")
    inputs = {"video": [str(clip)], "images": [str(images)]}
    rows: dict[str, int] = {}

    def first(name: str):
        def run(rep: int) -> None:
            out = work / f"{name}-{rep}"
            shutil.rmtree(out, ignore_errors=True)
            settle()
            summary = run_label(inputs[name], str(out), **base)
            assert sum(r["frames_segmented"] for r in summary["inputs"]) == n
            rows[name] = sum(r["instances"] for r in summary["inputs"])
        return run

    def rerun(name: str):
        def run(rep: int) -> None:
            out = work / f"{name}-{rep}-rerun"
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(work / f"{name}-{rep}", out)
            settle()
            t0 = time.perf_counter()
            summary = run_label(inputs[name], str(out), **base, confidence=0.7)
            reruns.setdefault(name, []).append(time.perf_counter() - t0)
            assert sum(r["frames_segmented"] for r in summary["inputs"]) == 0  # the model did not run
        return run

    timings: dict = {}
    reruns: dict[str, list[float]] = {}
    with warm_prefect(timings):
        warm_label(make_clip(work / "clips", args.seed + 100, 4), work, **base)
        firsts = interleaved([("video", first("video")), ("images", first("images"))], args.reps)
        # rerun timing excludes the copy: measured inside
        interleaved([("video", rerun("video")), ("images", rerun("images"))], args.reps)

    mach = machine()
    print(f"# {mach['date']}  {mach['cpu']}  {mach['cores']} cores, torch {mach['torch']}, load {mach['load_avg_1m']}"
          f"  | {command_line()}")
    print(f"# model {model_label(model_spec)}, {n} frames 480x640 (seed {args.seed}): one video vs {n} JPEG images")
    fps = {k: n / median(v) for k, v in firsts.items()}
    table = [[k, rows[k], " ".join(f"{x:.2f}" for x in firsts[k]), fps[k],
              " ".join(f"{x:.2f}" for x in reruns[k]), median(reruns[k])] for k in inputs]
    print_table(["input", "rows", "first run s", "frames/s", "rerun s (confidence)", "rerun median s"], table)
    emit({
        "bench": "images",
        "model": model_label(model_spec),
        "frames": n,
        "reps": args.reps,
        "video_fps": round(fps["video"], 2),
        "images_fps": round(fps["images"], 2),
        "ratio_images_vs_video": round(fps["images"] / fps["video"], 3),
        "rerun_video_s": round(median(reruns["video"]), 3),
        "rerun_images_s": round(median(reruns["images"]), 3),
        "rerun_images_ms_per_image": round(1000 * median(reruns["images"]) / n, 2),
        "date": mach["date"],
        "load_avg_1m": mach["load_avg_1m"],
    })


if __name__ == "__main__":
    main()
