"""The review flow and `segflow review`: the objects and frames a reviewer should check first.

    segflow review labels/ --top 20            # a listing with reasons; also a Prefect table artifact
    segflow review labels/ --top 20 --json     # one JSON object: {"objects": [...], "frames": [...]}

The priorities are `segflow.review.review_queue` over whole videos, measured against the
confidence and NMS IoU threshold the labels were made with (from the run manifest).
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
from prefect import flow
from prefect.artifacts import create_table_artifact

from segflow.errors import SegflowError
from segflow.review import review_queue
from segflow.storage.exports.common import labeled_inputs
from segflow.storage.layout import Layout
from segflow.storage.manifest import read_manifest

ARTIFACT_KEY = "review-queue"


def run_thresholds(out_dir: str | Path) -> tuple[float, float]:
    """(confidence, iou_threshold) the labels of `out_dir` were made with (defaults if unknown)."""
    settings = (read_manifest(Layout(Path(out_dir).expanduser())).get("last_run") or {}).get("settings") or {}
    return float(settings.get("confidence", 0.6)), float(settings.get("iou_threshold", 0.3))


def queue_of(out_dir: str | Path):
    """(objects, frames) review queue of an output folder (see `review_queue`)."""
    inputs = labeled_inputs(out_dir)
    import pandas as pd

    df = pd.concat([i.rows for i in inputs], ignore_index=True)
    frames = {i.video_id: np.asarray(i.frames) for i in inputs}
    return review_queue(df, *run_thresholds(out_dir), frames=frames)


@flow(name="review", log_prints=True)
def review_flow(out: str, top: int = 20) -> dict:
    """Rank the objects and frames of `out` for review; publish the top `top` as table artifacts."""
    objects, frames = queue_of(out)
    result = {
        "objects": _records(objects.head(top)),
        "frames": _records(frames[frames["priority"] > 0].head(top)),
    }
    create_table_artifact(table=result["objects"] or [{"object_id": "-", "reasons": "no objects"}],
                          key=ARTIFACT_KEY, description=f"Top {top} objects to review in {out}")
    create_table_artifact(table=result["frames"] or [{"frame": "-", "reasons": "no frames"}],
                          key=f"{ARTIFACT_KEY}-frames", description=f"Top {top} frames to review in {out}")
    return result


def _records(df) -> list[dict]:
    return [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in df.to_dict("records")]


@click.command("review")
@click.argument("out_dir", metavar="LABELS")
@click.option("--top", type=int, default=20, show_default=True, help="How many objects and frames to list.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the listing.")
def review(out_dir: str, top: int, as_json: bool) -> None:
    """List the objects and frames of LABELS a reviewer should check first, with reasons."""
    if top < 1:
        raise SegflowError(f"--top {top}: need at least 1")
    labeled_inputs(out_dir)  # refuses a folder without a label table before the flow starts
    result = review_flow(out=out_dir, top=top)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"objects to review first (of {out_dir}):")
    for r in result["objects"]:
        click.echo(f"  {r['priority']:.2f}  {r['object_id']}  {r['class_name']}  frames {r['first_frame']}-"
                   f"{r['last_frame']} ({r['frames']})  {r['reasons'] or '-'}")
    click.echo("frames to review first:")
    for r in result["frames"]:
        click.echo(f"  {r['priority']:.2f}  {r['video_id']} frame {r['frame']}  {r['instances']} instances  "
                   f"{r['reasons'] or '-'}")
