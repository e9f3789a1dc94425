"""A parameterized rerun over an earlier output: same inputs, some settings changed.

Only the stages the changed settings touch run again (a confidence, IoU, coarseness
or tracking change never runs the model).
"""

from __future__ import annotations


from prefect import flow
from prefect.states import State

from segflow.errors import SegflowError
from segflow.flowrun import reported
from segflow.flows.label import label_flow
from segflow.settings import DEFAULT_OUT, RelabelChanges, relabel_settings
from segflow.storage.fs import as_path
from segflow.storage.layout import Layout
from segflow.storage.manifest import read_manifest


@flow(name="relabel", log_prints=True)
@reported
def relabel_flow(out: str = DEFAULT_OUT, changes: RelabelChanges = RelabelChanges()) -> dict | State:  # type: ignore[valid-type]
    """Relabel every input of `out` with its last run's settings, changed where given.

    Args:
        out: An output folder written by an earlier label run. A relative path is taken
            from the worker's working folder.
        changes: The settings to change; those left empty stay as in the earlier run
            (an end frame of -1: the video's last frame, the whole video).
    """
    manifest = read_manifest(Layout(as_path(out)))
    last = manifest.get("last_run", {}).get("settings")
    inputs = [src for src, e in manifest.get("inputs", {}).items() if e.get("status") == "ok"]
    if not last or not inputs:
        raise SegflowError(f"--out {out}: no earlier label run recorded there")
    settings = relabel_settings(last, changes)
    panel, advanced = settings.split()
    state = label_flow(inputs=inputs, out=out, settings=panel, advanced=advanced, return_state=True)
    return state.result() if state.is_completed() else state
