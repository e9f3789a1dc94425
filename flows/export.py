"""The export flow: the label table as COCO, Encord, YouTube-VIS, CVAT or Label Studio (`segflow export`,
`segflow.tablecmds`, runs it where a Prefect server records the run)."""

from __future__ import annotations

from typing import Annotated, Optional

from prefect import flow, get_run_logger
from pydantic import Field

from segflow.storage.exports import FORMATS, export_labels


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
