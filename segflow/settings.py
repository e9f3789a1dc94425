"""The label settings: the seed's panel, one for one, with their bounds.

Flow parameters use this model, so the Prefect UI renders it as a form and refuses
bad values; the CLI validates through it too and turns errors into one line.
"""

from __future__ import annotations

import os
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from segflow.errors import SegflowError
from segflow.storage.keys import key_of


class LabelSettings(BaseModel):
    """Settings of one label run (see docs in shared/spec/product.md)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field("shapes-demo", description="Registered model name or checkpoint path")
    start_frame: int = Field(0, ge=0, description="First frame to label (inclusive)")
    end_frame: Optional[int] = Field(None, ge=0, description="Last frame to label (inclusive); empty = last frame")
    confidence: float = Field(0.6, ge=0.0, le=1.0, description="Keep instances scoring at least this")
    coarseness: float = Field(0.005, ge=0.0, le=0.1, description="RDP tolerance as a fraction of the longer image side")
    iou_threshold: float = Field(0.3, ge=0.0, le=1.0, description="Same-class mask IoU above which the lower-scored instance is deleted")
    class_agnostic_nms: Optional[bool] = Field(
        None, description="Let instances of different classes suppress each other; "
        "empty = the model's recommendation (on for shapes-demo), else off")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto, cpu, cuda or cuda:N")
    cpu_fallback: bool = Field(False, description="After the GPU retries fail, segment the range on the CPU")
    tracking: bool = Field(True, description="Keep one object_id per instance across frames")
    ontology: Optional[str] = Field(None, description="Ontology JSON path; empty = derived from the model's classes")
    track_buffer: int = Field(30, ge=0, le=10_000, description="Frames a lost track waits to be matched again")
    match_iou: float = Field(0.2, gt=0.0, le=1.0, description="Minimum mask IoU to continue a track")
    min_track_length: int = Field(1, ge=1, le=10_000, description="Frames before a track can be re-identified")
    track_low_score: float = Field(0.1, ge=0.0, le=1.0, description="Score floor of the tracker's second (low-score) pass")
    reid_gate: float = Field(1.0, ge=0.0, le=100.0, description="Re-identification radius in object sizes (0 = off)")
    track_class_penalty: Optional[float] = Field(
        None, ge=0.0, le=1.0,
        description="IoU a cross-class match gives up (1 = strict); empty = 0.3, or 0.05 with class-agnostic NMS")
    min_area: float = Field(16.0, ge=0.0, description="Polygon parts and holes smaller than this (px^2) are dropped")
    precision: str = Field(
        "auto", pattern=r"^(auto|fp32|mixed)$",
        description="auto, fp32 or mixed: mixed runs the model in float16 autocast with channels_last on a GPU; "
        "auto = mixed on a GPU, fp32 on the CPU (the CPU always runs fp32)")
    batch_size: Optional[int] = Field(
        None, ge=1, le=256, description="Frames per model call; empty = 4 on a GPU, 2 on the CPU")
    frames_per_range: int = Field(64, ge=1, le=100_000, description="Frames per cached Parquet range")

    @property
    def class_penalty(self) -> float:
        """The tracker's cross-class penalty: as given, else by NMS mode.

        Per-class NMS leaves a model's cross-class duplicates of one object on the frame,
        and a strong penalty keeps a track on its own class's duplicate; after
        class-agnostic NMS there are none, and a class flip on the same mask is the
        model's confusion, so the class only breaks near-ties (bench/tracking.py:
        IDF1 0.877 at 0.3 vs 0.755 at 0 per class; 0.893 at 0.3 vs 0.912 at 0.05 agnostic).
        """
        if self.track_class_penalty is not None:
            return self.track_class_penalty
        return 0.05 if self.class_agnostic_nms else 0.3

    def with_recommended(self, recommended: dict | None) -> "LabelSettings":
        """These settings with every unset (None) field of RECOMMENDABLE taken from a
        model's `recommended` settings, else its built-in default (a setting the user
        gave always wins). Raises SegflowError for a recommendation out of bounds."""
        unset = {k: (recommended or {}).get(k, default) for k, default in RECOMMENDABLE.items()
                 if getattr(self, k) is None}
        return make_settings(**{**self.model_dump(), **unset}) if unset else self

    def result_params(self, model_id: str, ontology_digest: str) -> dict:
        """Every setting that shapes an output row (not device, batch or range size)."""
        return {
            "model_id": model_id,
            "ontology": ontology_digest,
            "start_frame": self.start_frame,
            "end_frame": self.end_frame,
            "confidence": self.confidence,
            "coarseness": self.coarseness,
            "iou_threshold": self.iou_threshold,
            "class_agnostic_nms": self.class_agnostic_nms,
            "tracking": self.tracking,
            "tracker": {
                "track_buffer": self.track_buffer, "match_iou": self.match_iou,
                "min_track_length": self.min_track_length, "track_low_score": self.track_low_score,
                "reid_gate": self.reid_gate, "track_class_penalty": self.class_penalty,
            } if self.tracking else None,
            "min_area": self.min_area,
        }

    def params_hash(self, model_id: str, ontology_digest: str) -> str:
        return key_of(self.result_params(model_id, ontology_digest))


# Settings a checkpoint may recommend (metadata key "recommended"), with the value used
# when neither the user nor the model says.
RECOMMENDABLE: dict[str, object] = {"class_agnostic_nms": False}


def env_switch(name: str) -> bool | None:
    """An on/off environment variable: True for 1/true/yes/on, False for 0/false/no/off,
    None when unset or anything else (the caller's default)."""
    value = os.environ.get(name, "").strip().lower()
    return True if value in ("1", "true", "yes", "on") else False if value in ("0", "false", "no", "off") else None


_FLAGS = {
    "start_frame": "--start-frame", "end_frame": "--end-frame", "confidence": "--confidence",
    "coarseness": "--coarseness", "iou_threshold": "--iou-threshold", "device": "--device",
    "class_agnostic_nms": "--class-agnostic-nms", "tracking": "--tracking/--no-tracking",
    "track_buffer": "--track-buffer", "match_iou": "--match-iou",
    "min_track_length": "--min-track-length", "track_low_score": "--track-low-score", "reid_gate": "--reid-gate",
    "track_class_penalty": "--track-class-penalty", "min_area": "--min-area",
    "precision": "--precision", "batch_size": "--batch-size", "frames_per_range": "--frames-per-range", "model": "--model",
    "ontology": "--ontology", "cpu_fallback": "--cpu-fallback",
}


def make_settings(**values) -> LabelSettings:
    """Validate settings; the first problem becomes one SegflowError line naming the flag."""
    try:
        settings = LabelSettings(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "settings"
        flag = _FLAGS.get(field, field)
        allowed = _allowed(field)
        raise SegflowError(f"{flag}={err.get('input')!r}: {err['msg'].lower()}{allowed}") from None
    if settings.end_frame is not None and settings.start_frame > settings.end_frame:
        raise SegflowError(
            f"--start-frame={settings.start_frame} is after --end-frame={settings.end_frame}: need start <= end"
        )
    return settings


def _allowed(field: str) -> str:
    info = LabelSettings.model_fields.get(field)
    if info is None:
        return ""
    lo = hi = None
    for m in info.metadata:
        lo = getattr(m, "ge", None) if getattr(m, "ge", None) is not None else lo
        lo = getattr(m, "gt", None) if getattr(m, "gt", None) is not None else lo
        hi = getattr(m, "le", None) if getattr(m, "le", None) is not None else hi
    if lo is not None and hi is not None:
        return f" (allowed: {lo} to {hi})"
    if lo is not None:
        return f" (allowed: >= {lo})"
    if field == "device":
        return " (allowed: auto, cpu, cuda, cuda:N)"
    return ""
