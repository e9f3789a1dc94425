"""The commands that read a label table: `segflow export`, `segflow preview`, `segflow review`.

Each does its work right here, without importing Prefect. Where a Prefect server records
runs (`segflow server`, or a `PREFECT_API_URL` of the environment or a Prefect profile:
`segflow.server.prefect_api`), the work is recorded there as a run of the flow of the same
name (`segflow.flows.export`, `.preview`, `.review`, which deployments run): its
parameters, state, log lines and artifacts, through the REST API (`segflow.runrecord`).
With none, nothing is recorded: no temporary server, which would take the record with it.
Either way the same checks first, the same files and the same output.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Optional

import click

from segflow.errors import SegflowError
from segflow.preview import DEFAULT_SHEET_FRAMES, check_preview, write_preview
from segflow.runrecord import recorded
from segflow.server import prefect_api
from segflow.storage.exports import FORMATS, check_export, check_export_sources, check_frame_format, export_labels


def run_export(out: str, fmt: str, to: str, image_prefix: str | None = None, frames: bool | None = None,
               frame_format: str = "jpg", review_priority: bool = False) -> str:
    """Validate everything first (one clear error, nothing written), then export in this
    process, recorded as an `export` flow run where a Prefect server records runs
    (`prefect_api`). Returns the written file (a path, or an object store's URI)."""
    check_export(out, fmt, to, review_priority)
    check_frame_format(frame_format)
    check_export_sources(out, fmt, frames)  # an input gone or changed: one line, before any flow run
    options = dict(image_prefix=image_prefix, frames=frames, frame_format=frame_format, review_priority=review_priority)
    with recorded(prefect_api(), "export", dict(out=out, format=fmt, to=to, **options)) as run:
        path = str(export_labels(out, fmt, to, **options))
        if run is not None:
            run.log(f"wrote {fmt} export of {out} to {path}")  # flows/export.py's line
    return path


@click.command("export")
@click.argument("out_dir", metavar="LABELS")
@click.option("--format", "fmt", required=True, metavar="|".join(FORMATS), help="Export format.")
@click.option("--to", "to", required=True,
              help="File to write, local or s3://; a folder (ending in /, existing, or no suffix: review) gets a default file name.")
@click.option("--image-prefix", default=None,
              help="label-studio: each task's image is this prefix (a URL, or /data/local-files/?d=ROOT/) + the "
                   "image's name  [default: the image's path]")
@click.option("--frames/--no-frames", default=None,
              help="Write the frame images the export names (video frames as <video>/<frame>.jpg, images "
              "linked) beside the export file (cvat: the images under images/)  [default: on for coco, youtube-vis, "
              "label-studio (its tasks name these files) and cvat's images]")
@click.option("--frame-format", default="jpg", show_default=True, metavar="jpg|png", help="Image format of the frames.")
@click.option("--review-priority", is_flag=True,
              help="encord: each instance's review_priority as the dynamic numeric attribute 'Review priority' of its "
                   "object, and the Encord ontology that declares it beside the rows (<file>.ontology.json); a project "
                   "ontology without that attribute refuses such rows")
def export(out_dir: str, fmt: str, to: str, image_prefix: str | None, frames: bool | None, frame_format: str,
           review_priority: bool) -> None:
    """Export the label table in LABELS (a label run's --out folder) as COCO, Encord, YouTube-VIS, CVAT or Label Studio."""
    click.echo(run_export(out_dir, fmt, to, image_prefix, frames, frame_format, review_priority))


@click.command("preview")
@click.argument("out_dir", metavar="LABELS")
@click.option("--to", "to", required=True, help="Folder to write the previews into.")
@click.option("--input", "source", default=None, help="Only this input (its path or video_id).")
@click.option("--frames", type=int, default=DEFAULT_SHEET_FRAMES, show_default=True, help="Frames on each contact sheet.")
def preview(out_dir: str, to: str, source: Optional[str], frames: int) -> None:
    """Write overlay videos and contact sheets of the labels in LABELS into --to."""
    check_preview(out_dir, to, source, frames)  # one clear error before the flow starts
    with recorded(prefect_api(), "preview", dict(out=out_dir, to=to, input=source, frames=frames)) as run:
        written = {name: str(path) for name, path in write_preview(out_dir, to, source=source, frames=frames).items()}
        for name, path in written.items() if run is not None else ():
            run.log(f"preview {name}: {path}")  # flows/preview.py's lines
    for path in written.values():
        click.echo(path)


@click.command("review")
@click.argument("out_dir", metavar="LABELS")
@click.option("--top", type=int, default=20, show_default=True, help="How many objects and frames to list.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the listing.")
def review(out_dir: str, top: int, as_json: bool) -> None:
    """List the objects and frames of LABELS a reviewer should check first, with reasons."""
    from segflow.artifacts import review_records, review_tables
    from segflow.review import queue_of
    from segflow.storage.exports.common import labeled_inputs

    if top < 1:
        raise SegflowError(f"--top {top}: need at least 1")
    labeled_inputs(out_dir)  # refuses a folder without a label table before the flow starts
    with recorded(prefect_api(), "review", dict(out=out_dir, top=top)) as run:
        result = review_records(*queue_of(out_dir), top)
        for key, rows, description in review_tables(result, top, out_dir) if run is not None else ():
            run.table(key, rows, description)  # the listing also as the run's table artifacts (flows/review.py's)
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
