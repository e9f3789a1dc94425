"""Every label setting, defined once: title, description, bounds, default and group.

`PanelSettings` holds the seed's panel, `AdvancedSettings` the tracker and performance
knobs; `LabelSettings` is both in one flat model (what a job, its cache keys and the
manifest use). Everything users see comes from these fields:

- the flows' parameters (`settings: PanelSettings`, `advanced: AdvancedSettings`), so the
  Prefect UI form shows each field's title, description and bounds, and refuses bad
  values by the schema (Prefect keeps a model's field descriptions; it drops those of
  `Annotated` flow parameters);
- the CLI options of `segflow label` and `segflow demo` (`segflow.cli.label_options`);
- the README's settings table (`settings_table`, checked by tests/test_settings.py).

A setting whose default depends on something else (the device, the video, the model)
is `None` when unset: its `unset` text says what applies, and the form shows an empty
box, not a None toggle (`segflow.forms`). `class_agnostic_nms` is `None` unless
the user sets it, so a checkpoint's recommended settings can apply (`with_recommended`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from types import UnionType
from typing import Annotated, Any, Literal, Optional, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, create_model

from segflow.errors import SegflowError
from segflow.forms import FormModel, setting, tri_state
from segflow.storage.keys import key_of

DEFAULT_OUT = "labels"  # the deployments' output folder (relative: to the worker's working folder)
DEFAULT_INBOX = "inbox"  # the folder the label-inbox deployment watches
# label-inbox's own output folder: one label table = one settings set (a relabel of label-dataset's
# `labels` to other settings, then an inbox run at its defaults, would mix two params_hash in one table)
DEFAULT_INBOX_OUT = "labels-inbox"
DEVICE_WORDS = ("auto", "cpu", "cuda")  # and cuda:N
DEVICE_PATTERN = rf"^({'|'.join(DEVICE_WORDS)}|cuda:[0-9]+)$"
# The form's check of `device` (DEVICE_PATTERN's values) worded so that the Prefect UI's refusal reads
# `'gpu' is not one of ['auto', 'cpu', 'cuda']`, not a regex (the description names cuda:N)
Device = Annotated[str, WithJsonSchema({"type": "string", "if": {"pattern": "^cuda:[0-9]+$"},
                                        "else": {"enum": list(DEVICE_WORDS)}})]
DEFAULT_SCORE_FLOOR = 0.05  # raw detections are cached down to this score: a confidence rerun runs no model
INBOX_CRON = "*/15 * * * *"  # label-inbox's schedule (`segflow serve --cron`; prefect.yaml's, checked by a test)
# label-inbox's concurrency (prefect.yaml's, `segflow serve`'s; a test checks both): a run due while one runs is cancelled
INBOX_CONCURRENCY = {"limit": 1, "collision_strategy": "CANCEL_NEW"}

# Defaults that depend on something else (the setting itself is None when unset):
BATCH_SIZE_GPU, BATCH_SIZE_CPU = 4, 2  # batch_size: frames per model call on a GPU / on the CPU
CLASS_PENALTY, CLASS_PENALTY_AGNOSTIC = 0.3, 0.05  # track_class_penalty: per-class NMS / class-agnostic NMS


TriState = tri_state("recommended")  # class_agnostic_nms: the model's recommendation unless set


class PanelSettings(FormModel):
    """The panel's settings: what to label with, and how."""

    model_config = ConfigDict(title="Settings")

    model: str = setting(
        "shapes-demo", "Model",
        "A registered model name (shapes-demo, coco-r50, coco-r50-v2) or a checkpoint path (.safetensors).",
        min_length=1)
    start_frame: int = setting(
        0, "Start frame", "First frame of each video to label (inclusive); in a dataset, a video shorter than "
        "this has no frames in range (said so in the summary).", ge=0)
    end_frame: Optional[int] = setting(
        None, "End frame", "Last frame of each video to label (inclusive); a shorter video is labeled to its last frame.",
        unset="the video's last frame", ge=0)
    confidence: float = setting(0.6, "Confidence", "Keep instances whose score is at least this (0 to 1).",
                                ge=0.0, le=1.0)
    coarseness: float = setting(
        0.005, "Polygon coarseness",
        "Ramer-Douglas-Peucker tolerance as a fraction of the image's longer side (0 to 0.1); "
        "0 keeps the pixel contour, higher means fewer vertices.", ge=0.0, le=0.1)
    iou_threshold: float = setting(
        0.3, "IoU threshold",
        "Of two same-class instances on one frame whose mask IoU is above this (0 to 1), the lower-scored "
        "is deleted (any two instances with class-agnostic NMS).", ge=0.0, le=1.0)
    device: Device = setting("auto", "Processing unit",
                             "auto (a GPU when there is one), cpu, cuda or cuda:N.", pattern=DEVICE_PATTERN)
    tracking: bool = setting(
        True, "Tracking",
        "On: one object_id follows an instance through the frames; off: every instance on every frame "
        "gets its own object_id.", flag="--tracking/--no-tracking")
    ontology: Optional[str] = setting(
        None, "Ontology", "Path to a JSON ontology mapping model classes to objects (name, featureHash, color).",
        unset="derived from the model's classes")


class AdvancedSettings(FormModel):
    """Tracker, polygon and performance settings; the defaults suit most videos."""

    model_config = ConfigDict(title="Advanced settings")

    # None = not set by the user: the model's recommended setting applies (checkpoint
    # metadata, see `with_recommended` and RECOMMENDABLE), else off. Keep it None-able for that reason.
    # The form shows a choice (recommended / on / off), see `tri_state`.
    class_agnostic_nms: TriState = setting(
        None, "Class-agnostic NMS", "Let instances of different classes suppress each other.",
        advanced=True, unset="the model's recommended setting (checkpoint metadata: on for shapes-demo), else off",
        empty="recommended", flag="--class-agnostic-nms/--per-class-nms")
    track_buffer: int = setting(30, "Track buffer", "Frames a lost track waits to be matched again.",
                                advanced=True, ge=0, le=10_000)
    match_iou: float = setting(0.2, "Match IoU", "Minimum (motion-shifted) mask IoU to continue a track.",
                               advanced=True, gt=0.0, le=1.0)
    min_track_length: int = setting(
        4, "Min track length",
        "Tracks seen on fewer frames are left out of the label table (a model's blink or a spurious detection), "
        "except where labeling starts or ends; 1 keeps every track.", advanced=True, ge=1, le=10_000)
    track_low_score: float = setting(0.1, "Track low score",
                                     "Score floor of the tracker's second pass over low-score detections.",
                                     advanced=True, ge=0.0, le=1.0)
    reid_gate: float = setting(1.0, "Re-identification gate",
                               "Re-identification radius in object sizes (0 turns re-identification off).",
                               advanced=True, ge=0.0, le=100.0)
    track_class_penalty: Optional[float] = setting(
        None, "Track class penalty", "Mask IoU a match across classes gives up (1: never across classes).",
        advanced=True, unset=f"{CLASS_PENALTY}, or {CLASS_PENALTY_AGNOSTIC} with class-agnostic NMS", ge=0.0, le=1.0)
    min_area: float = setting(16.0, "Min area (px²)", "Polygon parts and holes smaller than this many square pixels are dropped.",
                              advanced=True, ge=0.0)
    precision: Literal["auto", "fp32", "mixed"] = setting(
        "auto", "Precision",
        "mixed runs the model in float16 autocast with channels_last on a GPU; auto is mixed on a GPU and "
        "fp32 on the CPU (the CPU always runs fp32).", advanced=True)
    batch_size: Optional[int] = setting(None, "Batch size", "Frames per model call.", advanced=True,
                                                     unset=f"{BATCH_SIZE_GPU} on a GPU, {BATCH_SIZE_CPU} on the CPU", ge=1, le=256)
    frames_per_range: int = setting(64, "Frames per range", "Frames per cached Parquet file.", advanced=True,
                                    ge=1, le=100_000)
    images_per_shard: int = setting(
        256, "Images per shard",
        "Images stored together, about: one label file and one cache file per stage for each shard of an image "
        "dataset (cut by content, so added images change only the shards they fall in).", advanced=True,
        ge=1, le=100_000)
    cpu_fallback: bool = setting(False, "CPU fallback", "After the GPU retries fail, segment the range on the CPU.",
                                 advanced=True)


class LabelSettings(AdvancedSettings, PanelSettings):  # fields: the panel's first
    """Every setting of one label run, flat (the panel's and the advanced ones)."""

    model_config = ConfigDict(title="Label settings")

    @classmethod
    def join(cls, panel: PanelSettings | dict | None, advanced: AdvancedSettings | dict | None) -> LabelSettings:
        """The flat settings of a flow's two parameters (models, dicts or None)."""
        values = {}
        for part in (panel, advanced):
            values.update(part.model_dump(exclude_unset=False) if isinstance(part, BaseModel) else part or {})
        return make_settings(**values)

    def split(self) -> tuple[PanelSettings, AdvancedSettings]:
        """The two flow parameters these settings are."""
        return (PanelSettings(**self.model_dump(include=set(PanelSettings.model_fields))),
                AdvancedSettings(**self.model_dump(include=set(AdvancedSettings.model_fields))))

    @property
    def nms_across_classes(self) -> bool:
        """Whether NMS compares instances across classes (unset: off)."""
        return bool(self.class_agnostic_nms)

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
        return CLASS_PENALTY_AGNOSTIC if self.class_agnostic_nms else CLASS_PENALTY

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
            "class_agnostic_nms": self.nms_across_classes,
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
# when neither the user nor the model sets one (see LabelSettings.with_recommended).
RECOMMENDABLE: dict[str, object] = {"class_agnostic_nms": False}


def _bounds(meta: Any) -> dict[str, Any]:
    """The pydantic bounds (ge, gt, le, lt, pattern, min_length) one field metadata object holds."""
    return {k: getattr(meta, k) for k in ("ge", "gt", "le", "lt", "pattern", "min_length")
            if getattr(meta, k, None) is not None}


def field_bounds(name: str) -> dict[str, Any]:
    """A setting's bounds by keyword (`{"ge": 0.0, "le": 1.0}`)."""
    out: dict[str, Any] = {}
    for m in LabelSettings.model_fields[name].metadata:
        out.update(_bounds(m))
    return out


def _value_type(annotation: Any) -> Any:
    """`int` of `Optional[int]`; other annotations as they are."""
    if get_origin(annotation) in (Union, UnionType):
        return next(a for a in get_args(annotation) if a is not type(None) )
    return annotation


# A relabel change of end_frame to this means "the video's last frame": the form's empty
# box already means "as in the earlier run", so a run limited to some frames needs a value
# to go back to the whole video.
WHOLE_VIDEO = -1


def _changes_model() -> type[BaseModel]:
    """The relabel deployment's changes: the panel's settings again (same titles,
    descriptions and bounds), each one empty = as in the earlier run; end_frame also
    takes `WHOLE_VIDEO` (see `relabel_settings`)."""
    fields: dict[str, Any] = {}
    for name, info in PanelSettings.model_fields.items():
        base = str((info.json_schema_extra or {}).get("summary", ""))  # type: ignore[union-attr]
        kind = _value_type(info.annotation)
        description = f"{base} {'unchanged' if kind is bool else 'Empty'}: as in the earlier run."
        bounds = field_bounds(name)
        if name == "end_frame":
            description += f" {WHOLE_VIDEO}: {(info.json_schema_extra or {}).get('unset')} (the whole video)."  # type: ignore[union-attr]
            bounds["ge"] = WHOLE_VIDEO
        form = [m for m in info.metadata if isinstance(m, WithJsonSchema)]  # the field's own form schema
        kind = Annotated[(kind, *form)] if form else kind
        fields[name] = (tri_state("unchanged") if kind is bool else Optional[kind],
                        Field(None, title=info.title, description=description, **bounds))
    changes = create_model("RelabelChanges", __base__=FormModel, **fields)
    changes.model_config["title"] = "Changes"
    return changes


RelabelChanges = _changes_model()


def relabel_settings(last: dict, changes: BaseModel | dict | None) -> LabelSettings:
    """An earlier run's settings (`last`, as the manifest records them) with the relabel
    form's `changes`: an empty (None) change keeps the earlier value; an end_frame of
    `WHOLE_VIDEO` goes back to the video's last frame."""
    given = changes.model_dump() if isinstance(changes, BaseModel) else dict(changes or {})
    values = {**last, **{k: v for k, v in given.items() if v is not None}}
    if values.get("end_frame") == WHOLE_VIDEO:
        values["end_frame"] = None
    return make_settings(**values)


def env_switch(name: str) -> bool | None:
    """An on/off environment variable: True for 1/true/yes/on, False for 0/false/no/off,
    None when unset or anything else (the caller's default)."""
    value = os.environ.get(name, "").strip().lower()
    return True if value in ("1", "true", "yes", "on") else False if value in ("0", "false", "no", "off") else None


# ---- the one settings definition, as each surface shows it ---------------------------------


def setting_fields(group: str | None = None) -> dict[str, Any]:
    """The settings' pydantic fields in panel-then-advanced order (or one `group`'s)."""
    return {n: f for n, f in LabelSettings.model_fields.items()
            if group is None or (f.json_schema_extra or {}).get("group") == group}  # type: ignore[union-attr]


def default_of(name: str) -> Any:
    """A setting's default (None: unset, see `unset_text`), for code that needs it outside a run."""
    return LabelSettings.model_fields[name].default


def flag_of(name: str) -> str:
    """A setting's CLI flag: `--confidence`, `--tracking/--no-tracking`."""
    extra = LabelSettings.model_fields[name].json_schema_extra or {}
    return str(extra.get("flag") or "--" + name.replace("_", "-"))  # type: ignore[union-attr]


def summary_of(name: str) -> str:
    """A setting's description without what applies when it is unset (CLI help, README)."""
    return str((LabelSettings.model_fields[name].json_schema_extra or {}).get("summary", ""))  # type: ignore[union-attr]


def unset_text(name: str) -> str | None:
    """What applies when a setting is left empty (`None`), or None for a plain default."""
    return (LabelSettings.model_fields[name].json_schema_extra or {}).get("unset")  # type: ignore[union-attr]


def choices_of(name: str) -> list[str] | None:
    """The allowed values of an enum-like setting (`precision`), else None."""
    kind = _value_type(LabelSettings.model_fields[name].annotation)
    return [str(a) for a in get_args(kind)] if get_origin(kind) is Literal else None


def allowed_text(name: str) -> str:
    """The allowed values of a setting, for an error line: `0.0 to 1.0`, `auto, fp32, mixed`."""
    if name == "device":
        return "auto, cpu, cuda, cuda:N"
    choices = choices_of(name)
    if choices:
        return ", ".join(choices)
    b = field_bounds(name)
    lo, hi = b.get("ge", b.get("gt")), b.get("le", b.get("lt"))
    if lo is not None and hi is not None:
        return f"{lo} to {hi}" if "gt" not in b else f"above {lo}, at most {hi}"
    return f">= {lo}" if lo is not None else ""


def make_settings(**values: Any) -> LabelSettings:
    """Validate flat settings; the first problem becomes one SegflowError line naming the
    CLI flag (flows say it as the form does: `in_form_terms`)."""
    try:
        settings = LabelSettings(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "settings"
        if field not in LabelSettings.model_fields:
            raise SegflowError(f"{field}={err.get('input')!r}: {err['msg'].lower()} (not a setting)") from None
        allowed = allowed_text(field)
        problem = "not allowed" if err["type"] in ("string_pattern_mismatch", "literal_error") else err["msg"].lower()
        raise SegflowError(f"{flag_of(field)}={err.get('input')!r}: {problem}"
                           + (f" (allowed: {allowed})" if allowed else "")) from None
    if settings.end_frame is not None and settings.start_frame > settings.end_frame:
        raise SegflowError(
            f"--start-frame={settings.start_frame} is after --end-frame={settings.end_frame}: need start <= end"
        )
    return settings


_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]*(?:/--[a-z-]+)?")


def _renamed_flags(message: str, term: Callable[[str], str], unknown: Callable[[str], str]) -> str:
    """`message` with each setting's CLI flag (and `--tracking`/`--no-tracking`,
    `--class-agnostic-nms`) as `term(setting name)`, `--out` as `out`, any other flag as
    `unknown(flag)`: one table for the form's and the Python API's words."""
    terms = {flag_of(n): term(n) for n in LabelSettings.model_fields}
    terms.update({"--no-tracking": term("tracking"), "--tracking": term("tracking"), "--out": "out",
                  "--class-agnostic-nms": term("class_agnostic_nms")})
    return _FLAG.sub(lambda m: terms.get(m.group(0), unknown(m.group(0))), message)


def in_form_terms(message: str) -> str:
    """An error line as the Prefect UI form names things: `--confidence=1.5: ...` ->
    `Confidence (confidence)=1.5: ...`; `--out`, `INPUT` -> the flows' `out`, `inputs`."""
    fields = LabelSettings.model_fields
    message = _renamed_flags(message, lambda n: f"{fields[n].title} ({n})", lambda flag: flag)
    return re.sub(r"^(INPUTS?|input)\b", "inputs", message)


def in_python_terms(message: str) -> str:
    """An error line as the Python API names things: `--confidence=1.5: ...` ->
    `confidence=1.5: ...` (the keyword argument), `--runner` -> `runner`."""
    message = _renamed_flags(message, lambda n: n, lambda flag: flag[2:].replace("-", "_"))
    return re.sub(r"^(INPUTS?|INPUT)\b", "inputs", message)


def settings_table() -> str:
    """The README's settings table (markdown), made from the settings' fields."""
    rows = ["| setting | CLI flag | flow parameter | allowed | default | meaning |", "|---|---|---|---|---|---|"]
    form = LabelSettings.model_json_schema()["properties"]
    for name, f in setting_fields().items():
        group = (f.json_schema_extra or {}).get("group")  # type: ignore[union-attr]
        choice = form[name].get("enum") if form[name].get("type") == "string" else None  # a tri-state's choices
        default = unset_text(name) or ("on" if f.default is True else "off" if f.default is False else f"`{f.default}`")
        if choice:  # the form's and the CLI's value when unset, then what it means
            default = f"`{form[name]['default']}`: {default}"
        allowed = allowed_text(name) or ("/".join(choice) if choice else "on/off" if isinstance(f.default, bool) else "text")
        meaning = summary_of(name).replace("|", "\\|")
        param = f"`{'settings' if group == 'panel' else 'advanced'}.{name}`"
        rows.append(f"| {f.title} | `{flag_of(name)}` | {param} | {allowed} | {default} | {meaning} |")
    return "\n".join(rows)
