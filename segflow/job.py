"""A validated label job: everything checked before any work starts."""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

import torch

from segflow.errors import SegflowError
from segflow.models.registry import ModelRef, resolve_device, resolve_model
from segflow.ontology import Ontology, default_ontology, load_ontology, parse_ontology
from segflow.settings import LabelSettings
from segflow.storage.layout import Layout, check_writable
from segflow.tasks.contracts import FrameRange, VideoInfo
from segflow.tasks.decode import is_media, plan_ranges, probe
from segflow.tasks.segment import DEFAULT_SCORE_FLOOR


@dataclass(frozen=True)
class Job:
    """One label run: settings, where to write, which model, which inputs."""

    settings: LabelSettings
    layout: Layout
    model: ModelRef
    ontology: Ontology
    device: torch.device
    videos: tuple[VideoInfo, ...]

    @property
    def params_hash(self) -> str:
        return self.settings.params_hash(self.model.model_id, self.ontology.digest)

    @property
    def score_floor(self) -> float:
        return min(DEFAULT_SCORE_FLOOR, self.settings.confidence)

    def frame_range(self, video: VideoInfo) -> FrameRange:
        """The detection range clipped to this input (an image has frame 0 only)."""
        if video.kind == "image":
            return FrameRange(0, 0)
        end = video.frame_count - 1 if self.settings.end_frame is None else self.settings.end_frame
        return FrameRange(self.settings.start_frame, end)

    def ranges(self, video: VideoInfo) -> list[FrameRange]:
        whole = self.frame_range(video)
        return plan_ranges(whole.start, whole.end, self.settings.frames_per_range)

    def class_name(self, label: int) -> str | None:
        return self.model.classes[label - 1] if 1 <= label <= len(self.model.classes) else None


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files, folders (recursively, media files only) and globs -> sorted unique files."""
    if not inputs:
        raise SegflowError("INPUT: give at least one video, image, folder or glob")
    found: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            media = sorted(p for p in path.rglob("*") if p.is_file() and is_media(p))
            if not media:
                raise SegflowError(f"input {item}: folder has no images or videos")
            found += media
        elif any(ch in item for ch in "*?["):
            matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            if not matches:
                raise SegflowError(f"input {item}: glob matches no files")
            found += matches
        else:
            found.append(path)
    unique = dict.fromkeys(p.resolve() for p in found)
    return list(unique)


def prepare_job(inputs: list[str], out: str, settings: LabelSettings) -> Job:
    """Check every input, setting, the model and the output folder; write nothing."""
    layout = check_writable(out)
    device = resolve_device(settings.device)
    videos = tuple(probe(p) for p in expand_inputs(inputs))
    for v in videos:
        if v.kind == "video" and settings.end_frame is not None and settings.end_frame >= v.frame_count:
            raise SegflowError(
                f"--end-frame={settings.end_frame}: beyond the last frame of {v.source} "
                f"(frames 0 to {v.frame_count - 1})"
            )
        if v.kind == "video" and settings.start_frame >= v.frame_count:
            raise SegflowError(
                f"--start-frame={settings.start_frame}: beyond the last frame of {v.source} "
                f"(frames 0 to {v.frame_count - 1})"
            )
    model = resolve_model(settings.model)
    if settings.ontology:
        ontology = load_ontology(settings.ontology, model.classes)
    elif model.ontology:
        ontology = parse_ontology(model.ontology, model.classes, f"--model {settings.model} ontology")
    else:
        ontology = default_ontology(model.classes)
    return Job(settings, layout, model, ontology, device, videos)

