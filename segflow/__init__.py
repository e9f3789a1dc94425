"""segflow: automated instance-segmentation labeling as Prefect flows.

The Python API (stable across internal changes; `import segflow` itself stays cheap,
the rest is imported on first use):

    segflow.label(inputs, out, **settings) -> LabelSet   # the flow run of `segflow label`
    segflow.open(out) -> LabelSet                        # a labeled output folder, local or s3://
    LabelSet: .table .inputs .classes .frames() .masks() .to_supervision() .iter_frames() .export()
    SegflowError: every refused setting, input or folder (the CLI's one-line message)
"""

from __future__ import annotations

import os as _os
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# flows/, tasks/ and storage/ sit beside this folder in a checkout and are installed as
# segflow.flows, segflow.tasks, segflow.storage (pyproject's package-dir). Python run in the
# checkout's root imports this folder as `segflow` (the current folder comes first on sys.path),
# where an installed package's mapping is not asked: there the checkout's root is searched
# too, so segflow.flows is the checkout's flows/ (not "No module named 'segflow.storage'").
_checkout = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if not _os.path.isdir(_os.path.join(__path__[0], "flows")) and _os.path.isfile(
        _os.path.join(_checkout, "pyproject.toml")) and all(
        _os.path.isfile(_os.path.join(_checkout, part, "__init__.py")) for part in ("flows", "tasks", "storage")):
    __path__.append(_checkout)
__all__ = ["Frame", "InputsFailed", "LabelSet", "LabeledInput", "SegflowError", "label", "open"]

_LAZY = {
    "label": "segflow.api", "open": "segflow.api",
    "LabelSet": "segflow.labelset", "LabeledInput": "segflow.labelset", "Frame": "segflow.labelset",
    "SegflowError": "segflow.errors", "InputsFailed": "segflow.errors",
}

if TYPE_CHECKING:
    from segflow.api import label, open
    from segflow.errors import InputsFailed, SegflowError
    from segflow.labelset import Frame, LabeledInput, LabelSet


def __getattr__(name: str) -> Any:
    """The API's names, imported when first used (PEP 562)."""
    if name in _LAZY:
        from importlib import import_module

        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'segflow' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
