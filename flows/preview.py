"""The preview flow and the `segflow preview` command: overlay videos and contact sheets of a label table."""

from __future__ import annotations

from typing import Annotated, Optional

import click
from prefect import flow, get_run_logger
from pydantic import Field

from segflow.preview import DEFAULT_SHEET_FRAMES, MAX_SHEET_FRAMES, check_preview, write_preview


@flow(name="preview", log_prints=True)
def preview_flow(
    out: Annotated[str, Field(description="Output folder of a label run")],
    to: Annotated[str, Field(description="Folder for the previews")],
    input: Annotated[Optional[str], Field(description="Only this input (path or video_id); a path also says where the media is now")] = None,  # noqa: A002
    frames: Annotated[int, Field(ge=1, le=MAX_SHEET_FRAMES, description="Frames on each contact sheet")] = DEFAULT_SHEET_FRAMES,
) -> dict[str, str]:
    """Write an overlay mp4 and a contact sheet per labeled video (a PNG per image) into `to`."""
    written = write_preview(out, to, source=input, frames=frames)
    log = get_run_logger()
    for name, path in written.items():
        log.info("preview %s: %s", name, path)
    return {name: str(path) for name, path in written.items()}


@click.command("preview")
@click.argument("out_dir", metavar="LABELS")
@click.option("--to", "to", required=True, help="Folder to write the previews into.")
@click.option("--input", "source", default=None, help="Only this input (its path or video_id).")
@click.option("--frames", type=int, default=DEFAULT_SHEET_FRAMES, show_default=True, help="Frames on each contact sheet.")
def preview(out_dir: str, to: str, source: Optional[str], frames: int) -> None:
    """Write overlay videos and contact sheets of the labels in LABELS into --to."""
    check_preview(out_dir, to, source, frames)  # one clear error before the flow starts
    written = preview_flow(out=out_dir, to=to, input=source, frames=frames)
    for path in written.values():
        click.echo(path)
