"""The run manifest: what the last run did to each input of an output folder."""

from __future__ import annotations

import fcntl
import json

from segflow.storage.atomic import write_bytes_atomic
from segflow.storage.fs import is_remote
from segflow.storage.layout import Layout


def read_manifest(layout: Layout) -> dict:
    """The manifest, or an empty one."""
    try:
        return json.loads(layout.manifest.read_text())
    except (OSError, ValueError):
        return {"version": 1, "inputs": {}}


def record_run(layout: Layout, run: dict, inputs: dict[str, dict]) -> None:
    """Merge this run's per-input summaries into the manifest, atomically.

    An exclusive lock serializes the read-modify-write, so two runs finishing at
    once into the same folder both keep their inputs.
    """
    if is_remote(layout.root):  # object stores have no locks: last writer wins
        _merge(layout, run, inputs)
        return
    layout.meta_dir.mkdir(parents=True, exist_ok=True)
    with open(layout.meta_dir / "manifest.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _merge(layout, run, inputs)


def _merge(layout: Layout, run: dict, inputs: dict[str, dict]) -> None:
    manifest = read_manifest(layout)
    manifest["last_run"] = run
    manifest.setdefault("inputs", {}).update(inputs)
    write_bytes_atomic(layout.manifest, json.dumps(manifest, indent=2, sort_keys=True).encode())
