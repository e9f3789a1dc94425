"""The review flow: the objects and frames a reviewer should check first (`segflow review`,
`segflow.tablecmds`, runs it where a Prefect server records the run, with its table artifacts).

    segflow review labels/ --top 20            # a listing with reasons; also a Prefect table artifact
    segflow review labels/ --top 20 --json     # one JSON object: {"objects": [...], "frames": [...]}

The priorities are `segflow.review.review_queue` over whole videos, measured against the
confidence and NMS IoU threshold the labels were made with (from the run manifest).
"""

from __future__ import annotations

from prefect import flow

from segflow.artifacts import publish_review_queue
from segflow.review import queue_of


@flow(name="review", log_prints=True)
def review_flow(out: str, top: int = 20) -> dict:
    """Rank the objects and frames of `out` for review; publish the top `top` as table artifacts."""
    objects, frames = queue_of(out)
    return publish_review_queue(objects, frames, top, out)
