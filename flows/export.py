"""The export flow and the `segflow export` command: the label table as COCO, Encord or YouTube-VIS JSON."""

from __future__ import annotations

from typing import Annotated

import click
from prefect import flow, get_run_logger
from pydantic import Field

from segflow.storage.exports import FORMATS, check_export, export_labels


@flow(name="export", log_prints=True)
def export_flow(
    out: Annotated[str, Field(description="Output folder of a label run (holds the Parquet label table)")],
    format: Annotated[str, Field(description="coco, encord or youtube-vis")],  # noqa: A002 - the CLI's name
    to: Annotated[str, Field(description="File to write (or a folder: a default file name is used)")],
) -> str:
    """Export the label table of `out` as `format` JSON to `to`; returns the written file."""
    path = export_labels(out, format, to)
    get_run_logger().info("wrote %s export of %s to %s", format, out, path)
    return str(path)


def run_export(out: str, fmt: str, to: str) -> str:
    """Validate everything first (one clear error, nothing written), then run the export flow."""
    check_export(out, fmt, to)
    return export_flow(out=out, format=fmt, to=to)


@click.command("export")
@click.argument("out_dir", metavar="OUT_DIR")
@click.option("--format", "fmt", required=True, metavar="|".join(FORMATS), help="Export format.")
@click.option("--to", "to", required=True, help="File to write (a folder gets a default file name).")
def export(out_dir: str, fmt: str, to: str) -> None:
    """Export the label table in OUT_DIR as COCO, Encord label rows or YouTube-VIS JSON."""
    click.echo(run_export(out_dir, fmt, to))
