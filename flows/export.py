"""The export flow and `segflow export`: the label table as COCO, Encord, YouTube-VIS, CVAT or Label Studio."""

from __future__ import annotations

from typing import Annotated, Optional

import click
from prefect import flow, get_run_logger
from pydantic import Field

from segflow.storage.exports import FORMATS, check_export, check_export_sources, check_frame_format, export_labels


@flow(name="export", log_prints=True)
def export_flow(
    out: Annotated[str, Field(description="Output folder of a label run (holds the Parquet label table)")],
    format: Annotated[str, Field(description="One of " + ", ".join(FORMATS))],  # noqa: A002 - the CLI's name
    to: Annotated[str, Field(description="File to write (or a folder: a default file name is used)")],
    image_prefix: Annotated[str | None, Field(description="label-studio: image URL/path prefix")] = None,
    frames: Annotated[Optional[bool], Field(description="Write the frames the export names beside it "
                                                        "(default: on for coco and youtube-vis)")] = None,
    frame_format: Annotated[str, Field(description="jpg or png")] = "jpg",
    review_priority: Annotated[bool, Field(description="encord: each instance's review priority as an attribute "
                                                       "(and the ontology that declares it, beside)")] = False,
) -> str:
    """Export the label table of `out` as `format` JSON to `to`; returns the written file."""
    path = export_labels(out, format, to, image_prefix=image_prefix, frames=frames, frame_format=frame_format,
                         review_priority=review_priority)
    get_run_logger().info("wrote %s export of %s to %s", format, out, path)
    return str(path)


def run_export(out: str, fmt: str, to: str, image_prefix: str | None = None, frames: bool | None = None,
               frame_format: str = "jpg", review_priority: bool = False) -> str:
    """Validate everything first (one clear error, nothing written), then run the export flow."""
    check_export(out, fmt, to, review_priority)
    check_frame_format(frame_format)
    check_export_sources(out, fmt, frames)  # an input gone or changed: one line, before any flow run
    return export_flow(out=out, format=fmt, to=to, image_prefix=image_prefix, frames=frames, frame_format=frame_format,
                       review_priority=review_priority)


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
