"""Checkpoints: model weights plus the metadata needed to rebuild and label with them.

Two formats:

* ``.safetensors`` (preferred): tensors + header metadata ``{"segflow": <json meta>}``.
  No code can ride along, and the metadata is readable without loading the tensors.
* ``.pt`` / ``.pth``: ``torch.save({"state_dict": ..., "segflow_meta": {...}})``; read
  back with ``torch.load(weights_only=True)`` only, so a pickle carrying code is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from segflow.errors import SegflowError

if TYPE_CHECKING:
    import torch  # imported where weights are read or written: `read_meta` needs no torch

META_KEY = "segflow"  # safetensors header metadata key
PT_META_KEY = "segflow_meta"
PT_SUFFIXES = (".pt", ".pth")


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint says about itself.

    ``classes[i]`` is the name of model label ``i + 1``; label 0 is the background.
    """

    arch: str
    classes: tuple[str, ...]
    arch_kwargs: dict
    ontology: dict | None = None
    extra: dict | None = None
    recommended: dict | None = None  # label settings the model is best used with, e.g. {"class_agnostic_nms": true}

    @property
    def num_classes(self) -> int:
        """Class count as torchvision counts it (background included)."""
        return len(self.classes) + 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (classes as a list)."""
        d = dataclasses.asdict(self)
        d["classes"] = list(self.classes)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CheckpointMeta":
        """Inverse of :meth:`to_dict`; raises ValueError/TypeError/KeyError on bad input."""
        classes = d["classes"]
        if not isinstance(classes, (list, tuple)) or not all(isinstance(c, str) for c in classes) or not classes:
            raise ValueError("classes must be a non-empty list of strings")
        if not isinstance(d["arch"], str):
            raise ValueError("arch must be a string")
        arch_kwargs = d.get("arch_kwargs") or {}
        if not isinstance(arch_kwargs, dict):
            raise ValueError("arch_kwargs must be an object")
        recommended = d.get("recommended")
        if recommended is not None and not isinstance(recommended, dict):
            raise ValueError("recommended must be an object of label settings")
        return cls(
            arch=d["arch"],
            classes=tuple(classes),
            arch_kwargs=dict(arch_kwargs),
            ontology=d.get("ontology"),
            extra=d.get("extra"),
            recommended=recommended,
        )


def _is_pt(path: Path) -> bool:
    return path.suffix.lower() in PT_SUFFIXES


def _state_dict_for_saving(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses shared/non-contiguous storage; a CPU clone per tensor is cheap
    # for models this size and makes the file independent of the model's device.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (thread-safe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: the classic set-and-restore
    os.umask(mask)
    return mask


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, model: torch.nn.Module, meta: CheckpointMeta) -> str:
    """Write ``model``'s weights and ``meta`` to ``path`` atomically; return its SHA-256.

    The suffix picks the format (``.pt``/``.pth`` -> torch.save, anything else ->
    safetensors). The file is written next to the target and moved into place with
    ``os.replace`` so readers never see a half-written checkpoint.
    """
    import torch
    from safetensors.torch import save_file

    from segflow.models.arch import ARCHS

    path = Path(path)
    if meta.arch not in ARCHS:
        raise SegflowError(f"unknown model architecture {meta.arch!r}; choose one of: {', '.join(ARCHS)}")
    meta_json = json.dumps(meta.to_dict(), sort_keys=True)  # fails early if not JSON-able
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = _state_dict_for_saving(model)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if _is_pt(path):
            torch.save({"state_dict": tensors, PT_META_KEY: json.loads(meta_json)}, tmp)
        else:
            save_file(tensors, tmp, metadata={META_KEY: meta_json})
        # mkstemp (and safetensors' own writer) leave 0600; a checkpoint is an ordinary file.
        os.chmod(tmp, 0o666 & ~_umask())
        digest = file_digest(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return digest


def _meta_from_json(path: Path, raw: Any) -> CheckpointMeta:
    """Parse metadata (a JSON string or a dict) into CheckpointMeta or raise SegflowError."""
    if raw is None:
        raise SegflowError(f"checkpoint {path} has no segflow metadata")
    try:
        d = json.loads(raw) if isinstance(raw, str) else raw
        return CheckpointMeta.from_dict(d)
    except (ValueError, TypeError, KeyError) as exc:
        raise SegflowError(f"checkpoint {path} has invalid segflow metadata: {exc}") from exc


def _load_pt(path: Path) -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
    """Read a .pt/.pth with the weights-only unpickler (refuses code-carrying pickles)."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError (zip), EOFError, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SegflowError(f"cannot read checkpoint {path}: not a weights-only torch file ({first})") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict):
        raise SegflowError(f"checkpoint {path} has no state_dict")
    return obj["state_dict"], _meta_from_json(path, obj.get(PT_META_KEY))


def read_meta(path: str | os.PathLike) -> CheckpointMeta:
    """Read only the metadata of a checkpoint (the safetensors header; cheap).

    Raises :class:`SegflowError` if the file is missing, unreadable or has no metadata.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise SegflowError(f"checkpoint {path} does not exist")
    if _is_pt(path):
        return _load_pt(path)[1]
    try:
        with safe_open(str(path), framework="numpy") as fh:  # the header only: no torch
            metadata = fh.metadata() or {}
    except Exception as exc:
        raise SegflowError(f"cannot read checkpoint {path}: not a valid safetensors file ({exc})") from exc
    return _meta_from_json(path, metadata.get(META_KEY))


def load_checkpoint(path: str | os.PathLike, device: str = "cpu") -> tuple[torch.nn.Module, CheckpointMeta]:
    """Rebuild the model a checkpoint describes, load its weights strictly, put it in eval.

    Raises :class:`SegflowError` (one line naming the file) on a missing, corrupt or
    code-carrying file, missing metadata, an unknown arch, or weights that do not fit
    the architecture (e.g. another class count).
    """
    from safetensors.torch import load_file

    from segflow.models.arch import ARCHS, build_model

    path = Path(path)
    if not path.is_file():
        raise SegflowError(f"checkpoint {path} does not exist")
    if _is_pt(path):
        state, meta = _load_pt(path)
    else:
        meta = read_meta(path)
        try:
            state = load_file(str(path), device="cpu")
        except Exception as exc:
            raise SegflowError(f"cannot read checkpoint {path}: corrupt tensor data ({exc})") from exc
    if meta.arch not in ARCHS:
        raise SegflowError(f"checkpoint {path}: unknown architecture {meta.arch!r}; known: {', '.join(ARCHS)}")
    try:
        model = build_model(meta.arch, meta.num_classes, **meta.arch_kwargs)
    except SegflowError as exc:
        raise SegflowError(f"checkpoint {path}: {exc}") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        # torch's message is many lines; keep the first mismatch so the line stays short.
        detail = " ".join(str(exc).split())[:300]
        raise SegflowError(
            f"checkpoint {path} does not fit {meta.arch} with {len(meta.classes)} classes: {detail}"
        ) from exc
    try:
        model.to(device)
    except (RuntimeError, AssertionError) as exc:
        raise SegflowError(f"cannot move checkpoint {path} to device {device!r}: {exc}") from exc
    model.eval()
    return model, meta
