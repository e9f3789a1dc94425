"""Which device a run uses, decided without importing torch where that is possible.

Importing torch costs 2-9 s (more on a loaded machine), and a rerun served from the
cache or an export never runs a model. So a device is a `Device` (a string as torch
spells it: `cpu`, `cuda:0`) rather than a `torch.device`, and `resolve_device("auto")`
on a machine without any GPU device node answers `cpu` without asking torch: with no
NVIDIA (`/dev/nvidia*`, `/proc/driver/nvidia`), ROCm (`/dev/kfd`) or WSL (`/dev/dxg`)
device there, `torch.cuda.is_available()` is False whatever torch build is installed.
Where one exists, and for every explicit `cuda`/`cuda:N`, torch decides as before.
"""

from __future__ import annotations

import os
import re
import sys

from segflow.errors import SegflowError

GPU_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia", "/dev/kfd", "/dev/dxg")


class Device(str):
    """A device name as torch spells it (`cpu`, `cuda:1`), readable without torch.

    torch takes it wherever it takes a device string (`torch.device(d)`, `tensor.to(d)`);
    `.type` and `.index` read as `torch.device`'s do.
    """

    __slots__ = ()

    @property
    def type(self) -> str:
        """`cpu` or `cuda`."""
        return self.split(":", 1)[0]

    @property
    def index(self) -> int | None:
        """The GPU's index (`cuda:1` -> 1), None without one."""
        _, _, index = self.partition(":")
        return int(index) if index else None


def gpu_possible() -> bool:
    """Whether this machine has a GPU device node torch could use (see the module's docstring)."""
    return any(os.path.exists(node) for node in GPU_NODES)


def cuda_available() -> bool:
    """`torch.cuda.is_available()`, without importing torch when no GPU device node exists."""
    if "torch" not in sys.modules and not gpu_possible():
        return False
    import torch

    return torch.cuda.is_available()


def resolve_device(spec: str) -> Device:
    """`auto`, `cpu`, `cuda` or `cuda:N` -> a device that exists here, or one clear error."""
    if spec == "auto":
        return Device("cuda" if cuda_available() else "cpu")
    if spec == "cpu":
        return Device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", spec)
    if not match:
        raise SegflowError(f"--device {spec}: use auto, cpu, cuda or cuda:N")
    if not cuda_available():
        raise SegflowError(f"--device {spec}: no CUDA GPU is available here; use --device cpu or auto")
    import torch

    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise SegflowError(
            f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) are available"
        )
    return Device(f"cuda:{index}")
