"""Scheduled labeling of an inbox: label the files that are new since the last run.

A file counts as labeled when the output's manifest has it, unchanged (same size and
modification time), labeled with the same settings; everything else goes to the
label flow, whose caches make even a repeated file cheap.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.states import State

from segflow.flows.label import label_flow
from segflow.errors import SegflowError
from segflow.job import expand_inputs
from segflow.models.registry import resolve_model
from segflow.ontology import default_ontology, load_ontology, parse_ontology
from segflow.flowrun import reported
from segflow.settings import DEFAULT_INBOX, DEFAULT_INBOX_OUT, AdvancedSettings, LabelSettings, PanelSettings
from segflow.storage.fs import as_path, is_remote
from segflow.storage.layout import Layout
from segflow.storage.manifest import read_manifest


def settings_hash(settings: LabelSettings) -> str:
    """The params_hash these settings give, without probing any input."""
    model = resolve_model(settings.model)
    settings = settings.with_recommended(model.recommended)  # as the label run resolves them
    if settings.ontology:
        ontology = load_ontology(settings.ontology, model.classes)
    elif model.ontology:
        ontology = parse_ontology(model.ontology, model.classes)
    else:
        ontology = default_ontology(model.classes)
    return settings.params_hash(model.model_id, ontology.digest)


def inbox_files(inbox: str) -> list:
    """The media files in an inbox folder (or glob); none while it is missing or empty."""
    if not is_remote(as_path(inbox)) and not any(ch in inbox for ch in "*?[") and not as_path(inbox).is_dir():
        if as_path(inbox).exists():
            raise SegflowError(f"inbox {inbox}: not a folder")
        return []
    try:
        return expand_inputs([inbox])
    except SegflowError as exc:
        if "has no images or videos" in str(exc) or "matches no" in str(exc):
            return []
        raise


def new_files(inbox: str, out: str, params_hash: str) -> list[str]:
    """Media files in `inbox` not yet labeled into `out` with these settings (none
    while the inbox folder does not exist yet or holds no media)."""
    done = read_manifest(Layout(as_path(out))).get("inputs", {})
    fresh = []
    for path in inbox_files(inbox):
        st = path.stat()
        entry = done.get(str(path), {})
        same = (entry.get("size"), entry.get("mtime_ns"), entry.get("params_hash")) == (st.st_size, st.st_mtime_ns, params_hash)
        if not (same and entry.get("status") == "ok"):
            fresh.append(str(path))
    return fresh


@flow(name="label-inbox", log_prints=True)
@reported
def label_inbox_flow(
    inbox: str = DEFAULT_INBOX,
    out: str = DEFAULT_INBOX_OUT,
    settings: PanelSettings = PanelSettings(),
    advanced: AdvancedSettings = AdvancedSettings(),
) -> dict | State:
    """Label what is new in `inbox`; skip what is already labeled with these settings.

    Args:
        inbox: The folder (or glob) new videos and images arrive in; while it does not
            exist yet, a run finds nothing new. A relative path is taken from the worker's
            working folder.
        out: The output folder of the label table (local or s3://). A relative path is
            taken from the worker's working folder. Its own by default (labels-inbox, not
            label-dataset's labels): one label table holds one settings set.
        settings: The panel's settings.
        advanced: Tracker, polygon and performance settings.
    """
    flat = LabelSettings.join(settings, advanced)
    files = new_files(inbox, out, settings_hash(flat))
    if not files:
        where = as_path(inbox)
        state = "does not exist yet" if not is_remote(where) and not where.exists() else "has nothing new"
        return {"out": out, "inputs": [], "new": 0, "note": f"inbox {where} {state}: 0 new files, nothing to label"}
    get_run_logger().info("%d new file(s) in %s", len(files), as_path(inbox))
    state = label_flow(inputs=files, out=out, settings=settings, advanced=advanced, return_state=True)
    if not state.is_completed():
        return state
    return {**state.result(), "new": len(files)}
