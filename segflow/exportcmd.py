"""`segflow export`: the label table as COCO, Encord, YouTube-VIS, CVAT or Label Studio.

A Prefect flow run (`segflow.flows.export`) where a Prefect server records it (`segflow
server`, or a `PREFECT_API_URL` of the environment or a Prefect profile); with none, the
export is written right here: no temporary server, which would only take the run's
record with it, and no import of Prefect.
"""

from __future__ import annotations

import click

from segflow.server import prefect_api
from segflow.storage.exports import FORMATS, check_export, check_export_sources, check_frame_format, export_labels


def run_export(out: str, fmt: str, to: str, image_prefix: str | None = None, frames: bool | None = None,
               frame_format: str = "jpg", review_priority: bool = False) -> str:
    """Validate everything first (one clear error, nothing written), then export: as a
    flow run where a Prefect server records it (`prefect_api`), else in this process.
    Returns the written file (a path, or an object store's URI)."""
    check_export(out, fmt, to, review_priority)
    check_frame_format(frame_format)
    check_export_sources(out, fmt, frames)  # an input gone or changed: one line, before any flow run
    options = dict(image_prefix=image_prefix, frames=frames, frame_format=frame_format, review_priority=review_priority)
    if prefect_api() is None:
        return str(export_labels(out, fmt, to, **options))
    from segflow.cli import flow_context
    from segflow.flows.export import export_flow

    with flow_context():
        return export_flow(out=out, format=fmt, to=to, **options)


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
              "linked) beside the export file (cvat: the images under images/)  [default: on for coco, youtube-vis "
              "and cvat's images]")
@click.option("--frame-format", default="jpg", show_default=True, metavar="jpg|png", help="Image format of the frames.")
@click.option("--review-priority", is_flag=True,
              help="encord: each instance's review_priority as the dynamic numeric attribute 'Review priority' of its "
                   "object, and the Encord ontology that declares it beside the rows (<file>.ontology.json); a project "
                   "ontology without that attribute refuses such rows")
def export(out_dir: str, fmt: str, to: str, image_prefix: str | None, frames: bool | None, frame_format: str,
           review_priority: bool) -> None:
    """Export the label table in LABELS (a label run's --out folder) as COCO, Encord, YouTube-VIS, CVAT or Label Studio."""
    click.echo(run_export(out_dir, fmt, to, image_prefix, frames, frame_format, review_priority))
