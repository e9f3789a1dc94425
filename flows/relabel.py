"""A parameterized rerun over an earlier output: same inputs, some settings changed.

Only the stages the changed settings touch run again (a confidence, IoU, coarseness
or tracking change never runs the model).
"""

from __future__ import annotations

from typing import Annotated, Optional

from prefect import flow
from pydantic import Field

from segflow.errors import SegflowError
from segflow.flows.label import label_flow
from segflow.storage.fs import as_path
from segflow.storage.layout import Layout
from segflow.storage.manifest import read_manifest


@flow(name="relabel", log_prints=True)
def relabel_flow(
    out: Annotated[str, Field(description="An output folder written by an earlier label run")],
    confidence: Annotated[Optional[float], Field(ge=0, le=1)] = None,
    coarseness: Annotated[Optional[float], Field(ge=0, le=0.1)] = None,
    iou_threshold: Annotated[Optional[float], Field(ge=0, le=1)] = None,
    tracking: Optional[bool] = None,
    model: Optional[str] = None,
    start_frame: Annotated[Optional[int], Field(ge=0)] = None,
    end_frame: Annotated[Optional[int], Field(ge=0)] = None,
    device: Optional[str] = None,
) -> dict:
    """Relabel every input of `out` with its last settings, changed where given."""
    manifest = read_manifest(Layout(as_path(out)))
    last = manifest.get("last_run", {}).get("settings")
    inputs = [src for src, e in manifest.get("inputs", {}).items() if e.get("status") == "ok"]
    if not last or not inputs:
        raise SegflowError(f"relabel {out}: no earlier label run recorded there")
    changes = {
        "confidence": confidence, "coarseness": coarseness, "iou_threshold": iou_threshold,
        "tracking": tracking, "model": model, "start_frame": start_frame, "end_frame": end_frame,
        "device": device,
    }
    settings = {**last, **{k: v for k, v in changes.items() if v is not None}}
    return label_flow(inputs=inputs, out=out, **settings)
