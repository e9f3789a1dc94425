"""segflow's Python API: `label` and `open` (re-exported at the package root).

    import segflow
    labels = segflow.label("clip.mp4", "labels/", confidence=0.5)   # a Prefect flow run, as `segflow label`
    labels = segflow.open("labels/")                                # an output folder read back
    labels.to_supervision(labels.inputs[0].video_id, 0)

Settings are those of `segflow label` (the one settings model, `segflow.settings`): the
same names (flags without `--`, `-` as `_`), defaults and validation; a refused setting,
input or output folder raises `segflow.SegflowError` with the CLI's message, before any
work and with nothing written.
"""

from __future__ import annotations

import inspect
import os
import textwrap
from collections.abc import Iterable
from typing import Any

from segflow.errors import SegflowError
from segflow.labelset import LabelSet
from segflow.settings import LabelSettings, allowed_text, flag_of, in_python_terms, make_settings, setting_fields

RUNNERS = ("threads", "dask")


def label(
    inputs: str | os.PathLike | Iterable[str | os.PathLike],
    out: str | os.PathLike,
    *,
    runner: str = "threads",
    dask_address: str | None = None,
    dask_workers: int = 2,
    **settings: Any,
) -> LabelSet:
    # The docstring is made from the settings model below (`help(segflow.label)` lists them all).
    try:
        return _label(inputs, out, runner=runner, dask_address=dask_address, dask_workers=dask_workers, **settings)
    except SegflowError as exc:  # the CLI's checks and messages, naming keyword arguments, not flags
        raise SegflowError(in_python_terms(str(exc))) from None


def _label(inputs, out, *, runner: str, dask_address: str | None, dask_workers: int, **settings: Any) -> LabelSet:
    if runner not in RUNNERS:
        raise SegflowError(f"Invalid value for '--runner': {runner!r} is not one of {', '.join(map(repr, RUNNERS))}.")
    sources = [os.fspath(inputs)] if isinstance(inputs, (str, os.PathLike)) else [os.fspath(i) for i in inputs]
    if not sources:
        raise SegflowError("INPUTS: no input given (a video, an image, a folder, a glob or an @list file)")
    checked = make_settings(**settings)  # the CLI's validation and messages
    from segflow.server import use_running_server  # cheap: a file read, no Prefect

    use_running_server()  # as the CLI: the `segflow server start` server, when one runs
    if not os.environ.get("PREFECT_API_URL"):
        # as the CLI: a temporary Prefect server would report usage at start-up (and log
        # an ERROR line where there is no internet)
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        # Prefect gives its temporary server 20 s to answer; a notebook's machine is often
        # busy (a migrating database, other kernels): 20 s failed 2 of 3 starts at load 14.
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    from segflow.cli import run_label  # local: imports Prefect and torch
    values = checked.model_dump()  # run_label takes the settings flat (the flow: settings + advanced)
    summary = run_label(sources, os.fspath(out), runner=runner, dask_address=dask_address,
                        dask_workers=dask_workers, **values)
    return LabelSet(summary["out"], summary=summary)


def open(out: str | os.PathLike) -> LabelSet:
    """Read a labeled output folder (a local path, `file://` or `s3://` URI) as a `LabelSet`.

    Reads the Parquet label table only (no model, no Prefect run); raises SegflowError
    when the folder holds no label table.
    """
    return LabelSet(out)


def settings_doc() -> str:
    """Every setting of the settings model, panel then advanced: `name: type = default
    (allowed) [flag]` and its title and description, wrapped."""
    lines = []
    for group, heading in (("panel", "The panel"), ("advanced", "Advanced")):
        lines.append(f"{heading}:")
        for name, info in setting_fields(group).items():
            hint = info.annotation
            kind = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
            allowed = allowed_text(name)
            lines.append(f"    {name}: {kind} = {info.default!r}" + (f" ({allowed})" if allowed else "")
                         + f"  [{flag_of(name)}]")
            text = f"{info.title}: {info.description}" if info.title else info.description or ""
            lines += textwrap.wrap(text, 88, initial_indent=" " * 8, subsequent_indent=" " * 8, break_on_hyphens=False)
    return "\n".join(lines)


label.__doc__ = f"""Label videos and images into `out` and return the result as a `LabelSet`.

The same Prefect flow run as `segflow label INPUT... --out OUT [flags]` (shown in the
Prefect UI of `segflow server start`, or of PREFECT_API_URL; else Prefect starts a
temporary server in this process): inputs are validated first (SegflowError, nothing written), reruns
reuse the cache, and `LabelSet.summary` holds the run summary. If some inputs of a
dataset fail, the others are labeled and `segflow.InputsFailed` (a SegflowError) is
raised with the summary in `.summary`; `segflow.open(out)` reads what was labeled.

Args:
    inputs: a video, an image, a folder, a glob, an @list file or an s3:// URI, or a list of them.
    out: the output folder (local or s3://).
    runner: "threads" (in this process) or "dask" (a local Dask cluster, or `dask_address`).
    dask_address: scheduler address of an existing Dask cluster.
    dask_workers: workers of the local Dask cluster.

Settings: keyword arguments named as the CLI's flags (segflow.settings, the one model);
None leaves a setting unset (its "Empty:" rule applies).
{settings_doc()}

Returns:
    LabelSet of `out`.

Raises:
    SegflowError: a refused setting, input, model or output folder, with the CLI's message.
"""
label.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [p for p in inspect.signature(label).parameters.values() if p.kind is not p.VAR_KEYWORD]
    + [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=info.default, annotation=info.annotation)
       for name, info in LabelSettings.model_fields.items()],
    return_annotation=LabelSet,
)
