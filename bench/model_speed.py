"""Time a Mask R-CNN forward pass (batch 1, 480x640, eval + inference_mode) on CPU.

    python bench/model_speed.py                       # bundled shapes-demo if present
    python bench/model_speed.py --checkpoint X.safetensors --threads 2 --repeat 30
    python bench/model_speed.py --arch maskrcnn_small --random   # untrained weights

Prints a per-stage table (transform, backbone+FPN, RPN, RoI heads, postprocess) and a
final JSON line. Trained weights matter: an untrained model keeps a different number of
detections, and the mask head and mask pasting scale with it. The frame is a synthetic
shapes frame (seed 0) when segflow.synth is importable, else seeded noise.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

BUNDLED = Path(__file__).resolve().parents[1] / "segflow" / "assets" / "shapes-demo.safetensors"
STAGES = ("transform", "backbone", "rpn", "roi_heads", "postprocess")


def make_frame(height: int, width: int) -> torch.Tensor:
    """A float CHW frame in [0, 1]: synthetic shapes when available, else seeded noise."""
    try:
        from segflow.synth import generate

        img = next(iter(generate(0, 1, (height, width)))).image
    except Exception:
        img = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div(255)


@contextmanager
def stage_timer(model: torch.nn.Module, sink: dict[str, float]) -> Iterator[None]:
    """Accumulate wall time of the model's stages into ``sink`` via forward hooks."""
    starts: dict[str, float] = {}
    handles = []
    mods = {"backbone": model.backbone, "rpn": model.rpn, "roi_heads": model.roi_heads}
    for name, mod in mods.items():
        handles.append(mod.register_forward_pre_hook(lambda m, a, n=name: starts.__setitem__(n, time.perf_counter())))
        handles.append(mod.register_forward_hook(
            lambda m, a, o, n=name: sink.__setitem__(n, sink.get(n, 0.0) + time.perf_counter() - starts[n])))
    # GeneralizedRCNNTransform: forward = normalize/resize; postprocess = box rescale + mask pasting.
    tf = model.transform
    orig_fwd, orig_post = tf.forward, tf.postprocess

    def timed(fn, name):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                sink[name] = sink.get(name, 0.0) + time.perf_counter() - t
        return wrapper

    tf.forward, tf.postprocess = timed(orig_fwd, "transform"), timed(orig_post, "postprocess")
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        del tf.forward, tf.postprocess  # back to the class methods


def main() -> None:
    """Parse arguments, time the forward pass and print the table and JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(BUNDLED))
    ap.add_argument("--arch", default="maskrcnn_small", help="used with --random or when no checkpoint exists")
    ap.add_argument("--random", action="store_true", help="untrained weights instead of a checkpoint")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--score-thresh", type=float, default=None, help="override roi_heads.score_thresh")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    from segflow.models.arch import build_model, count_parameters
    from segflow.models.checkpoint import load_checkpoint

    if not args.random and Path(args.checkpoint).is_file():
        model, meta = load_checkpoint(args.checkpoint)
        source, arch = str(args.checkpoint), meta.arch
    else:
        model, source, arch = build_model(args.arch, 5).eval(), "random init", args.arch
    if args.score_thresh is not None:
        model.roi_heads.score_thresh = args.score_thresh
    frame = make_frame(args.height, args.width)

    times: list[float] = []
    per_stage: list[dict[str, float]] = []
    dets = 0
    with torch.inference_mode():
        for i in range(args.warmup + args.repeat):
            sink: dict[str, float] = {}
            with stage_timer(model, sink):
                t0 = time.perf_counter()
                out = model([frame])
                dt = time.perf_counter() - t0
            if i >= args.warmup:
                times.append(dt)
                per_stage.append(sink)
                dets = len(out[0]["boxes"])

    med = statistics.median(times)
    p90 = sorted(times)[int(0.9 * (len(times) - 1))]
    print(f"model {arch} ({source}), {count_parameters(model) / 1e6:.2f} M params, "
          f"{args.height}x{args.width}, batch 1, {args.threads} threads, {platform.processor() or platform.machine()}")
    print(f"{'stage':<12}{'median ms':>10}")
    for s in STAGES:
        print(f"{s:<12}{1000 * statistics.median(d.get(s, 0.0) for d in per_stage):>10.1f}")
    print(f"{'total':<12}{1000 * med:>10.1f}   (p90 {1000 * p90:.1f} ms, min {1000 * min(times):.1f} ms, {dets} detections)")
    print(json.dumps({
        "bench": "model_speed", "arch": arch, "weights": source, "height": args.height, "width": args.width,
        "threads": args.threads, "repeat": args.repeat, "median_s": round(med, 4), "p90_s": round(p90, 4),
        "min_s": round(min(times), 4), "detections": dets,
        "stages_ms": {s: round(1000 * statistics.median(d.get(s, 0.0) for d in per_stage), 2) for s in STAGES},
    }))


if __name__ == "__main__":
    main()
