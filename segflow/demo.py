"""`segflow demo`: label the bundled sample clip with the bundled model, write a preview."""

from __future__ import annotations

import time
from pathlib import Path

import click

from segflow.cli import label_options

SAMPLE_SEED = 5  # the bundled sample: a synthetic clip segflow renders deterministically,
SAMPLE_FRAMES = 48  # with all four classes, a ring, an occluder bar and crossings


def sample_clip(folder: Path) -> Path:
    """The demo's sample video (rendered once by segflow's own generator, then reused)."""
    from segflow.synth import write_clip

    video = folder / "sample.mp4"
    if not video.exists():
        write_clip(folder, seed=SAMPLE_SEED, n_frames=SAMPLE_FRAMES, size=(480, 640), name="sample",
                   n_objects=6, occluders=1)
    return video


def truth_line(truth: Path, labels: Path) -> str:
    """The sample's objects (its YouTube-VIS ground truth, written with the clip) against the
    labels' objects, and where to look when they differ: the bundled model is not perfect
    (on the default sample it also calls a background blob a square on every frame)."""
    import json

    import pandas as pd

    labeled = pd.read_parquet(labels, columns=["object_id"]).object_id.nunique()
    if not truth.is_file():
        return f"{labeled} objects labeled (the sample's ground truth {truth} is missing)"
    expected = len(json.loads(truth.read_text())["annotations"])
    line = f"the sample has {expected} objects (ground truth: {truth}); the labels have {labeled}"
    if labeled != expected:
        line += f": the model is not perfect; `segflow review {labels}` lists the objects to check first"
    return line


@click.command("demo")
@click.option("--out", default="demo-out", show_default=True,
              help="Folder for the sample (OUT/sample), labels (OUT/labels) and preview (OUT/preview).")
@label_options
def demo(out: str, **settings) -> None:
    """Label the bundled sample with the bundled model and write a preview."""
    from segflow.cli import _print_summary, run_label

    start = time.perf_counter()
    root = Path(out)
    video = sample_clip(root / "sample")
    result = run_label([str(video)], str(root / "labels"), **settings)
    _print_summary(result)
    click.echo(truth_line(video.with_suffix(".ytvis.json"), root / "labels"))
    try:
        from segflow.preview import write_preview
    except ImportError:  # preview module not installed in this build
        write_preview = None
    if write_preview is not None:
        paths = write_preview(str(root / "labels"), str(root / "preview"))
        for name, path in paths.items():
            click.echo(f"preview {name}: {path}")
    click.echo(f"demo finished in {time.perf_counter() - start:.1f} s; export the labels with "
               f"`segflow export {root / 'labels'} --format coco --to {root / 'coco.json'}`")  # inside OUT
