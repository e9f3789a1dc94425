"""A validated label job: everything checked before any work starts."""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

from segflow.errors import SegflowError
from segflow.models.devices import Device, resolve_device
from segflow.models.registry import ModelRef, resolve_model
from segflow.ontology import Ontology, default_ontology, load_ontology, parse_ontology
from segflow.settings import BATCH_SIZE_CPU, BATCH_SIZE_GPU, DEFAULT_SCORE_FLOOR, LabelSettings
from segflow.storage.fs import REMOTE_SCHEMES, as_path, is_remote
from segflow.storage.layout import Layout, check_writable
from segflow.contracts import FrameRange, VideoInfo
from segflow.media import input_ranges, is_media, probe
from segflow.storage.manifest import read_manifest


ALLOWED_SCHEMES = ("file", "s3")  # inputs are read only from these URI schemes (and plain paths)


@dataclass(frozen=True)
class Job:
    """One label run: settings, where to write, which model, which inputs."""

    settings: LabelSettings
    layout: Layout
    model: ModelRef
    ontology: Ontology
    device: Device
    videos: tuple[VideoInfo, ...]
    unreadable: tuple[tuple[str, str], ...] = ()  # (source, reason) of dataset inputs that failed to open
    duplicates: tuple[tuple[str, str], ...] = ()  # (source, the input with the same content)

    @property
    def params_hash(self) -> str:
        return self.settings.params_hash(self.model.model_id, self.ontology.digest)

    @property
    def mixed_precision(self) -> bool:
        """Whether the model runs in float16 autocast (only ever on a GPU)."""
        return self.device.type == "cuda" and self.settings.precision in ("auto", "mixed")

    @property
    def batch_size(self) -> int:
        """Frames per model call: the setting, else the device's default."""
        return self.settings.batch_size or default_batch_size(self.device)

    @property
    def score_floor(self) -> float:
        return min(DEFAULT_SCORE_FLOOR, self.settings.confidence)

    def ranges(self, video: VideoInfo) -> list[FrameRange]:
        s = self.settings
        return input_ranges(video, s.start_frame, s.end_frame, s.frames_per_range)

    @property
    def mapped_labels(self) -> tuple[int, ...]:
        """Model labels (1..K) whose class the ontology maps; the others are dropped."""
        return tuple(i + 1 for i, c in enumerate(self.model.classes) if c in self.ontology.objects)

    def class_name(self, label: int) -> str | None:
        return self.model.classes[label - 1] if 1 <= label <= len(self.model.classes) else None


def default_batch_size(device) -> int:
    """4 frames per model call on a GPU, 2 on the CPU: there a smaller batch ran as fast,
    and two ranges' forwards side by side peaked ~120 MB lower (bench/RESULTS.md, stop 13)."""
    return BATCH_SIZE_CPU if Device(str(device)).type == "cpu" else BATCH_SIZE_GPU


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files, folders (recursively, media files only), globs and list files -> unique files.

    A list file is named with a leading `@` (`@dataset.txt`): one path per line, relative
    paths taken from the list's folder, blank lines and `#` comments ignored.
    """
    if not inputs:
        raise SegflowError("INPUT: give at least one video, image, folder or glob")
    found: list[Path] = []
    for item in inputs:
        scheme = item.split("://", 1)[0].lower() if "://" in item else ""
        if scheme and scheme not in ALLOWED_SCHEMES:
            raise SegflowError(
                f"input {item}: scheme {scheme}:// is not allowed (allowed: local paths, {', '.join(s + '://' for s in ALLOWED_SCHEMES)})"
            )
        if scheme == "file":
            item = item[len("file://"):]
        if item.startswith("@"):
            found += expand_inputs(read_list(Path(item[1:])))
            continue
        if scheme in REMOTE_SCHEMES:
            found += expand_remote(item)
            continue
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
    unique = dict.fromkeys(p if is_remote(p) else p.resolve() for p in found)
    return list(unique)


def expand_remote(item: str) -> list:
    """An object-store URI (object, prefix or glob) -> the objects it names."""
    path = as_path(item)
    if any(ch in item for ch in "*?["):
        matches = sorted(as_path(f"{path.protocol}://{p}") for p in path.fs.glob(path.path))
        if not matches:
            raise SegflowError(f"input {item}: glob matches no objects")
        return matches
    if path.is_dir():
        media = sorted(p for p in path.rglob("*") if is_media(p))
        if not media:
            raise SegflowError(f"input {item}: prefix has no images or videos")
        return media
    return [path]


def read_list(path: Path) -> list[str]:
    """The entries of a dataset list file (see `expand_inputs`)."""
    try:
        lines = path.expanduser().read_text().splitlines()
    except OSError as exc:
        raise SegflowError(f"input @{path}: cannot read list file ({exc.strerror})") from None
    entries = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    if not entries:
        raise SegflowError(f"input @{path}: list file names no inputs")
    base = path.expanduser().resolve().parent
    return [e if Path(e).expanduser().is_absolute() else str(base / e) for e in entries]


_PREPARED: dict[tuple, Job] = {}


def remember_job(inputs: list[str], out: str, settings: LabelSettings, job: Job) -> None:
    """Hand a job validated just before a flow run to that run (see `take_job`)."""
    _PREPARED.clear()  # only the latest: a job is taken by the run it was made for
    _PREPARED[(tuple(inputs), out, settings.model_dump_json())] = job


def take_job(inputs: list[str], out: str, settings: LabelSettings) -> Job:
    """The job `remember_job` kept for exactly these arguments, or a freshly prepared one.

    The CLI validates before it starts a flow run (a refused input leaves no run
    behind); the flow then takes that job instead of probing every input again.
    """
    job = _PREPARED.pop((tuple(inputs), out, settings.model_dump_json()), None)
    return job if job is not None else prepare_job(inputs, out, settings)


def prepare_job(inputs: list[str], out: str, settings: LabelSettings) -> Job:
    """Check every input, setting, the model and the output folder; write nothing."""
    layout = check_writable(out)
    device = resolve_device(settings.device)
    videos, unreadable = probe_all(expand_inputs(inputs))
    videos, duplicates = drop_duplicates(videos)
    check_start_frame(videos, settings.start_frame)
    model = resolve_model(settings.model)
    if model.check is not None and not labeled_with(layout, model.model_id):
        model.check()  # unreadable weights, or weights that do not fit, refused before any work
    try:
        settings = settings.with_recommended(model.recommended)  # the model's advice where the user gave none
    except SegflowError as exc:
        raise SegflowError(f"--model {settings.model}: its recommended settings are invalid ({exc})") from None
    if settings.ontology:
        ontology = load_ontology(settings.ontology, model.classes)
    elif model.ontology:
        ontology = parse_ontology(model.ontology, model.classes, f"--model {settings.model} ontology")
    else:
        ontology = default_ontology(model.classes)
    return Job(settings, layout, model, ontology, device, videos, unreadable, duplicates)


def check_start_frame(videos: tuple[VideoInfo, ...], start_frame: int) -> None:
    """Refuse a start frame beyond the last frame of every video when nothing else is left
    to label (a lone video, or a dataset of only such videos). In a dataset with other
    inputs, such a video simply has no frames in range (said so in the run summary); an
    end frame beyond a shorter video is that video's last frame (`input_ranges`)."""
    beyond = [v for v in videos if v.kind == "video" and start_frame >= v.frame_count]
    if beyond and len(beyond) == len(videos):
        v = max(beyond, key=lambda v: v.frame_count)
        if len(beyond) == 1:
            raise SegflowError(f"--start-frame={start_frame}: beyond the last frame of {v.source} "
                               f"(frames 0 to {v.frame_count - 1})")
        raise SegflowError(f"--start-frame={start_frame}: beyond the last frame of every video "
                           f"(the longest, {v.source}: frames 0 to {v.frame_count - 1})")


def labeled_with(layout: Layout, model_id: str) -> bool:
    """Whether the last run recorded in `layout` used these very weights (`model_id` holds
    their digest): they were loaded and checked then, so a rerun that the cache serves
    needs neither torch nor the weights (the first range that misses loads them)."""
    return read_manifest(layout).get("last_run", {}).get("model_id") == model_id


def drop_duplicates(videos: tuple[VideoInfo, ...]) -> tuple[tuple[VideoInfo, ...], tuple[tuple[str, str], ...]]:
    """Keep the first input of each content digest: label files live under the
    video_id, and the same bytes labeled twice would only give the same rows twice."""
    first: dict[str, VideoInfo] = {}
    duplicates = []
    for v in videos:
        if v.video_id in first:
            duplicates.append((v.source, first[v.video_id].source))
        else:
            first[v.video_id] = v
    return tuple(first.values()), tuple(duplicates)


def probe_all(paths: list[Path]) -> tuple[tuple[VideoInfo, ...], tuple[tuple[str, str], ...]]:
    """Probe every input. A lone bad input is refused; in a dataset it is set aside
    (reported at the end, the run exits non-zero) so the good inputs still get labeled."""
    videos, unreadable = [], []
    for path in paths:
        try:
            videos.append(probe(path))
        except SegflowError as exc:
            if len(paths) == 1:
                raise
            unreadable.append((str(path), str(exc).removeprefix(f"input {path}: ")))  # listed by path already
    if not videos:
        raise SegflowError(f"no readable input among {len(paths)}: {unreadable[0][0]}: {unreadable[0][1]}")
    return tuple(videos), tuple(unreadable)

