"""The preview flow: overlay videos and contact sheets of a label table (`segflow preview`,
`segflow.tablecmds`, runs it where a Prefect server records the run)."""

from __future__ import annotations

from typing import Annotated, Optional

from prefect import flow, get_run_logger
from pydantic import Field

from segflow.preview import DEFAULT_SHEET_FRAMES, MAX_SHEET_FRAMES, write_preview


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
