"""The review flow and `segflow review`: the objects and frames a reviewer should check first.

    segflow review labels/ --top 20            # a listing with reasons; also a Prefect table artifact
    segflow review labels/ --top 20 --json     # one JSON object: {"objects": [...], "frames": [...]}

The priorities are `segflow.review.review_queue` over whole videos, measured against the
confidence and NMS IoU threshold the labels were made with (from the run manifest).
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath

import click
from prefect import flow

from segflow.artifacts import publish_review_queue
from segflow.errors import SegflowError
from segflow.review import queue_of
from segflow.storage.exports.common import labeled_inputs


@flow(name="review", log_prints=True)
def review_flow(out: str, top: int = 20) -> dict:
    """Rank the objects and frames of `out` for review; publish the top `top` as table artifacts."""
    objects, frames = queue_of(out)
    return publish_review_queue(objects, frames, top, out)


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
        click.echo(f"  {r['priority']:.2f}  {_name(r)}  {r['object_id']}  {r['class_name']}  frames {r['first_frame']}-"
                   f"{r['last_frame']} ({r['frames']})  {r['reasons'] or '-'}")
    click.echo("frames to review first:")
    for r in result["frames"]:
        click.echo(f"  {r['priority']:.2f}  {_name(r)} ({r['video_id']}) frame {r['frame']}  {r['instances']} instances  "
                   f"{r['reasons'] or '-'}")


def _name(row: dict) -> str:
    """The file name of a row's input (`cat.jpg`; its video_id where the source is unknown)."""
    source = row.get("source")
    return PurePosixPath(str(source).replace("\\", "/")).name if source else row["video_id"]
