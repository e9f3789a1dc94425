"""Scheduled labeling of an inbox: label the files that are new since the last run.

A file counts as labeled when the output's manifest has it, unchanged (same size and
modification time), labeled with the same settings; everything else goes to the
label flow, whose caches make even a repeated file cheap.
"""

from __future__ import annotations

from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import Field

from segflow.flows.label import label_flow
from segflow.errors import SegflowError
from segflow.job import expand_inputs
from segflow.models.registry import resolve_model
from segflow.ontology import default_ontology, load_ontology, parse_ontology
from segflow.settings import LabelSettings
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
def label_inbox_flow(
    inbox: Annotated[str, Field(description="Folder (or glob) that new videos and images arrive in")],
    out: Annotated[str, Field(description="Output folder of the label table")],
    settings: LabelSettings = LabelSettings(),
) -> dict:
    """Label what is new in `inbox`; skip what is already labeled with these settings."""
    files = new_files(inbox, out, settings_hash(settings))
    where = as_path(inbox)
    if not files:
        state = "does not exist yet" if not is_remote(where) and not where.exists() else "has nothing new"
        get_run_logger().info("inbox %s %s: 0 new files, nothing to label", where, state)
    else:
        get_run_logger().info("%d new file(s) in %s", len(files), where)
    if not files:
        return {"out": out, "inputs": [], "new": 0}
    result = label_flow(inputs=files, out=out, **settings.model_dump())
    return {**result, "new": len(files)}
