"""The compare flow and `segflow compare LABELS REFERENCE`: mask AP/AP50 and IDF1 as JSON.

    segflow compare relabeled/ reviewed/     # {"segm_AP": ..., "segm_AP50": ..., "IDF1": ...}

Both are output folders of a label table (a label run's, or `segflow import`'s); the
reference is taken as the truth (see `segflow.compare`). Inputs of LABELS the reference
has no frames of (one video of four reviewed and imported) are listed in the JSON as
`inputs_not_in_reference` and named on stderr: by default their labels are scored as
false positives (every labeled frame of either table counts); `--reference-inputs-only`
leaves them out.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import pandas as pd
from prefect import flow

from segflow.compare import align_videos, compare_tables
from segflow.storage.exports.common import labeled_inputs


def _table(out_dir: str) -> tuple[pd.DataFrame, set[tuple[str, int]], dict[str, str]]:
    """The table's rows, its labeled (video_id, frame) pairs and video_id -> source."""
    inputs = labeled_inputs(out_dir)
    df = pd.concat([i.rows for i in inputs], ignore_index=True)
    return df, {(i.video_id, int(f)) for i in inputs for f in i.frames}, {i.video_id: i.source for i in inputs}


@flow(name="compare")  # no log_prints: pycocotools' summary prints would become ~25 INFO lines
def compare_flow(labels: str, reference: str, reference_inputs_only: bool = False) -> dict:
    """Mask AP/AP50/AP75 and IDF1 of the table in `labels` against the one in `reference`.

    `inputs_not_in_reference`: the sources of the labels' inputs the reference has no
    labeled frame of (matched by video id, or by file name as `align_videos` does); with
    `reference_inputs_only` their rows and frames are left out of the scores.
    """
    lab, lab_frames, lab_sources = _table(labels)
    ref, ref_frames, _ = _table(reference)
    renamed = align_videos(lab, ref)
    ids = dict(zip(ref["video_id"], renamed["video_id"]))
    ref_frames = {(ids.get(v, v), f) for v, f in ref_frames}
    covered = {v for v, _ in ref_frames}
    missing = sorted(v for v in lab_sources if v not in covered)
    if reference_inputs_only:
        lab = lab[lab["video_id"].isin(covered)]
        lab_frames = {(v, f) for v, f in lab_frames if v in covered}
    return ({"labels": labels, "reference": reference,
             "inputs_not_in_reference": sorted(lab_sources[v] for v in missing),
             "label_inputs": len(lab_sources), "reference_inputs_only": reference_inputs_only}
            | compare_tables(lab, renamed, lab_frames | ref_frames))


@click.command("compare")
@click.argument("labels", metavar="LABELS")
@click.argument("reference", metavar="REFERENCE")
@click.option("--reference-inputs-only", is_flag=True, default=False,
              help="Score only the inputs of LABELS the reference has labeled frames of (default: every labeled "
                   "frame of either table, so the labels of inputs the reference lacks count as false positives).")
def compare(labels: str, reference: str, reference_inputs_only: bool) -> None:
    """Mask AP/AP50 and IDF1 of the label table LABELS against REFERENCE, as JSON.

    When the reference has no frames of some inputs of LABELS (one video of several
    reviewed), one line on stderr names them; the JSON lists them as inputs_not_in_reference.
    """
    labeled_inputs(labels), labeled_inputs(reference, what="REFERENCE")  # refuse a folder without a table before any work
    result = compare_flow(labels=labels, reference=reference, reference_inputs_only=reference_inputs_only)
    if missing := result["inputs_not_in_reference"]:
        names = ", ".join(Path(s).name for s in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        what = ("left out (--reference-inputs-only)" if reference_inputs_only else
                "their labels count as false positives; --reference-inputs-only leaves them out")
        click.echo(f"segflow: note: the reference has no frames of {len(missing)} of the {result['label_inputs']} "
                   f"inputs of LABELS ({names}): {what}", err=True)
    click.echo(json.dumps(result))
