"""The compare flow and `segflow compare LABELS REFERENCE`: mask AP/AP50 and IDF1 as JSON.

    segflow compare relabeled/ reviewed/     # {"segm_AP": ..., "segm_AP50": ..., "IDF1": ...}

Both are output folders of a label table (a label run's, or `segflow import`'s); the
reference is taken as the truth (see `segflow.compare`).
"""

from __future__ import annotations

import json

import click
import pandas as pd
from prefect import flow

from segflow.compare import align_videos, compare_tables
from segflow.storage.exports.common import labeled_inputs


def _table(out_dir: str) -> tuple[pd.DataFrame, set[tuple[str, int]]]:
    inputs = labeled_inputs(out_dir)
    df = pd.concat([i.rows for i in inputs], ignore_index=True)
    return df, {(i.video_id, int(f)) for i in inputs for f in i.frames}


@flow(name="compare")  # no log_prints: pycocotools' summary prints would become ~25 INFO lines
def compare_flow(labels: str, reference: str) -> dict:
    """Mask AP/AP50/AP75 and IDF1 of the table in `labels` against the one in `reference`."""
    lab, lab_frames = _table(labels)
    ref, ref_frames = _table(reference)
    renamed = align_videos(lab, ref)
    ids = dict(zip(ref["video_id"], renamed["video_id"]))
    frames = lab_frames | {(ids.get(v, v), f) for v, f in ref_frames}
    return {"labels": labels, "reference": reference} | compare_tables(lab, renamed, frames)


@click.command("compare")
@click.argument("labels", metavar="LABELS")
@click.argument("reference", metavar="REFERENCE")
def compare(labels: str, reference: str) -> None:
    """Mask AP/AP50 and IDF1 of the label table LABELS against REFERENCE, as JSON."""
    labeled_inputs(labels), labeled_inputs(reference, what="REFERENCE")  # refuse a folder without a table before any work
    click.echo(json.dumps(compare_flow(labels=labels, reference=reference)))
