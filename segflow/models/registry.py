"""Which model a name or path means, and loading it once per process.

`resolve_model` is cheap and runs before any work: it validates a name or a checkpoint's
metadata without importing torch. A checkpoint's weights are loaded by `ModelRef.check`
(before a run that may need them, see `segflow.job.prepare_job`) or by the first
`load_model`, so reruns served from the cache pay neither for torch nor for the weights.
"""

from __future__ import annotations

import copy
import functools
import importlib
import os
import threading
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from segflow.errors import SegflowError
from segflow.models.devices import Device

if TYPE_CHECKING:
    import torch

BUNDLED = "shapes-demo"


@dataclass(frozen=True)
class ModelRef:
    """A resolved, not yet loaded, model: its classes and a digest of its weights."""

    name: str
    classes: tuple[str, ...]  # model label i + 1 -> classes[i]; label 0 is background
    digest: str
    load: Callable[[Device], torch.nn.Module] = field(compare=False, repr=False)
    ontology: dict | None = field(default=None, compare=False)
    recommended: dict | None = field(default=None, compare=False)  # label settings used unless the user sets them
    # Loads the weights on the CPU (kept for `load`) and raises SegflowError if they are
    # unreadable or do not fit the architecture; None when resolving checked them already.
    check: Callable[[], object] | None = field(default=None, compare=False, repr=False)

    @property
    def model_id(self) -> str:
        """Model name and weights digest, as written in the `model_id` column."""
        return f"{self.name}@{self.digest[:12]}"


_REGISTRY: dict[str, Callable[[], ModelRef]] = {}
_LOADED: dict[tuple[str, str], torch.nn.Module] = {}
_CHECKPOINTS: dict[tuple[str, str], tuple] = {}  # (model, meta) loaded once per file state (`checkpoint_ref`)
_LOCK = threading.Lock()
_CHECKPOINT_LOCK = threading.Lock()


def register(name: str, factory: Callable[[], ModelRef]) -> None:
    """Add a named model; `factory` resolves it (validating files) when asked for."""
    _REGISTRY[name] = factory


def registered() -> list[str]:
    """Names of the registered models."""
    return sorted(_REGISTRY)


def load_plugins() -> None:
    """Import the modules named in SEGFLOW_PLUGINS (comma-separated): each registers
    its own models with `register`, e.g. a team's custom Mask R-CNN variants."""
    for name in filter(None, (m.strip() for m in os.environ.get("SEGFLOW_PLUGINS", "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise SegflowError(f"SEGFLOW_PLUGINS: cannot import {name} ({exc})") from None


def resolve_model(spec: str) -> ModelRef:
    """A registered model name or a checkpoint path -> ModelRef, or one clear error."""
    load_plugins()
    if spec in _REGISTRY:
        return _REGISTRY[spec]()
    path = Path(spec).expanduser()
    if path.suffix.lower() in (".safetensors", ".pt", ".pth") or path.exists():
        if not path.is_file():
            raise SegflowError(f"--model {spec}: no such checkpoint file")
        return checkpoint_ref(path, name=path.stem)
    raise SegflowError(
        f"--model {spec}: unknown model; use one of {', '.join(registered())} or a checkpoint path"
    )


def checkpoint_ref(path: Path, name: str, recommended: dict | None = None) -> ModelRef:
    """A ModelRef for a segflow checkpoint (.safetensors, or a weights-only .pt/.pth).

    Classes, ontology and recommended settings come from the safetensors header, read
    without torch; the weights are loaded on the CPU by the ref's `check` (a corrupt file
    or weights that do not fit their class list are refused there, in one line) or by
    its first `load`, once per file state, and kept. A .pt/.pth's metadata is inside the
    pickle, so its weights are loaded here. `recommended` settings (the bundled model's
    sidecar JSON) override those in the checkpoint's own metadata.
    """
    from segflow.models.checkpoint import PT_SUFFIXES, read_meta

    resolved, st = str(path.resolve()), path.stat()
    digest = _digest(resolved, st.st_size, st.st_mtime_ns, st.st_ino)
    key = (resolved, digest)

    def weights() -> torch.nn.Module:
        from segflow.models.checkpoint import load_checkpoint

        with _CHECKPOINT_LOCK:  # not _LOCK: `load_model` holds that while it calls `load`
            if key not in _CHECKPOINTS:
                _CHECKPOINTS[key] = load_checkpoint(path, device="cpu")
        return _CHECKPOINTS[key][0]

    if path.suffix.lower() in PT_SUFFIXES:
        weights()
        meta = _CHECKPOINTS[key][1]
    else:
        meta = _CHECKPOINTS[key][1] if key in _CHECKPOINTS else read_meta(path)

    def load(device: Device) -> torch.nn.Module:
        return copy.deepcopy(weights()).to(device)

    return ModelRef(name, tuple(meta.classes), digest, load, meta.ontology,
                    {**(meta.recommended or {}), **(recommended or {})} or None,
                    check=None if key in _CHECKPOINTS else weights)


@functools.lru_cache(maxsize=64)
def _digest(path: str, size: int, mtime_ns: int, inode: int) -> str:
    """A checkpoint's SHA-256, hashed once per file state (every run resolves its model:
    7 ms for the bundled one, seconds for a large one)."""
    from segflow.models.checkpoint import file_digest

    return file_digest(path)


def load_model(ref: ModelRef, device: Device | torch.device, channels_last: bool = False) -> torch.nn.Module:
    """The model in eval mode on `device`, built once per process and reused.

    `channels_last` stores its weights NHWC, so cuDNN's convolutions (and their float16
    tensor-core kernels) run without layout conversions. cuDNN's autotuning
    (`cudnn.benchmark`) stays off: the mask head's input changes with every detection
    count, and tuning each new one cost a fresh model process 13 s on its first 64
    frames of R50-FPN at 720p (H200), four times the range's own time.
    """
    import torch

    key = (ref.model_id, str(device), channels_last)
    with _LOCK:
        if key not in _LOADED:
            model = ref.load(device).eval().to(device)
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            _LOADED[key] = model
        return _LOADED[key]


_GPU_LOCK = threading.Lock()
_CPU_SLOTS: dict[int, threading.BoundedSemaphore] = {}


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity where the OS tells it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_streams() -> tuple[int, int]:
    """(frame ranges segmented at once, torch threads each) for CPU inference.

    A detector's intra-op threads scale poorly: on 2 cores, 2 threads ran
    `shapes-demo` 1.05x and R50-FPN 1.6x faster than 1, while two ranges at 1
    thread each ran them 1.6-1.85x and 1.2x faster than one range at 2 threads
    (bench/RESULTS.md). So on the CPU
    several ranges run side by side, up to 4, sharing the cores (`SEGFLOW_CPU_STREAMS`
    overrides the count).
    """
    cores = usable_cores()
    env = os.environ.get("SEGFLOW_CPU_STREAMS", "").strip()
    streams = int(env) if env.isdigit() and int(env) > 0 else min(4, cores)
    return streams, max(1, cores // streams)


@contextlib.contextmanager
def model_slot(device: Device | torch.device) -> Iterator[None]:
    """Hold a turn at the model: one range at a time per GPU, `cpu_streams()` on the CPU.

    On the CPU the calling thread's torch threads are set to the per-stream share
    (OpenMP keeps that setting per thread, so other threads are not affected).
    """
    if device.type != "cpu":
        with _GPU_LOCK:  # concurrent forwards on one GPU only fight over its memory
            yield
        return
    streams, threads = cpu_streams()
    with _LOCK:
        slots = _CPU_SLOTS.setdefault(streams, threading.BoundedSemaphore(streams))
    import torch

    with slots:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)


# ---- built-in models -------------------------------------------------------------


def _bundled() -> ModelRef:
    path = Path(str(resources.files("segflow") / "assets" / f"{BUNDLED}.safetensors"))
    if not path.is_file():
        raise SegflowError(f"--model {BUNDLED}: the bundled checkpoint is missing at {path}")
    return checkpoint_ref(path, name=BUNDLED, recommended=_sidecar(path).get("recommended"))


@functools.lru_cache(maxsize=4)
def _sidecar(path: Path) -> dict:
    """The JSON record beside a bundled checkpoint (how it was made, what it recommends)."""
    import json

    try:
        return json.loads(path.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return {}


def _torchvision_coco(name: str, weights_enum: str, builder: str) -> Callable[[], ModelRef]:
    """torchvision's COCO Mask R-CNN, its weights through torchvision's own cache."""

    def factory() -> ModelRef:
        import torch
        import torchvision.models.detection as det

        weights = getattr(det, weights_enum).COCO_V1
        classes = tuple(weights.meta["categories"][1:])
        filename = weights.url.rsplit("/", 1)[-1]
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        if not (cache / filename).is_file():
            _fetch(weights, name, cache)
        digest = filename.rsplit("-", 1)[-1].split(".")[0]  # torchvision's hash prefix

        def load(device: Device) -> torch.nn.Module:
            state = torch.load(cache / filename, map_location="cpu", weights_only=True)
            model = getattr(det, builder)(weights=None, weights_backbone=None, num_classes=len(classes) + 1)
            model.load_state_dict(state)
            return model

        return ModelRef(name, classes, digest, load)

    return factory


def _fetch(weights, name: str, cache: Path) -> None:
    if os.environ.get("SEGFLOW_OFFLINE") == "1":
        raise SegflowError(f"--model {name}: weights are not in torchvision's cache {cache} (offline)")
    import torch.hub

    filename = weights.url.rsplit("/", 1)[-1]
    match = torch.hub.HASH_REGEX.search(filename)
    try:
        # torch.hub's own download, not weights.get_state_dict: that prints a "Downloading: ..."
        # line on stderr before it fails offline, and the refusal must be one line
        cache.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(weights.url, str(cache / filename), match.group(1) if match else None,
                                       progress=False)
    except Exception as exc:
        raise SegflowError(
            f"--model {name}: weights are not in torchvision's cache {cache} and downloading "
            f"{weights.url} failed ({type(exc).__name__}); copy the file there to work offline"
        ) from None


register(BUNDLED, _bundled)
register("coco-r50", _torchvision_coco("coco-r50", "MaskRCNN_ResNet50_FPN_Weights", "maskrcnn_resnet50_fpn"))
register(
    "coco-r50-v2",
    _torchvision_coco("coco-r50-v2", "MaskRCNN_ResNet50_FPN_V2_Weights", "maskrcnn_resnet50_fpn_v2"),
)
