"""The run manifest: what the last run did to each input of an output folder.

    OUT/.segflow/manifest.json            the last run, and each video's (or failed input's) entry
    OUT/.segflow/manifest-images.pq  each image's entry in a shard (columns source, entry: JSON)

Images are many: their entries live in one Parquet table, which a run merges without
parsing them (the rows of its own sources replaced, the others copied as they are), so
recording a run of 10 images into a folder of 100,000 does not read and write 100,000
JSON entries. `read_manifest` gives both as one dict. (`.pq`, as the caches: a DuckDB glob
`OUT/**/*.parquet` reads hidden folders too, and must see the label table only.)
"""

from __future__ import annotations

import fcntl
import json

import pyarrow as pa
import pyarrow.compute as pc

from segflow.storage.atomic import write_bytes_atomic, write_parquet_atomic
from segflow.storage.fs import is_remote, read_table
from segflow.storage.layout import Layout

IMAGES = "manifest-images.pq"


def read_manifest(layout: Layout) -> dict:
    """The manifest (`last_run`, `inputs`: source -> entry), or an empty one."""
    manifest = _read_json(layout)
    images = _read_images(layout)
    if images is not None and images.num_rows:
        entries = {s: json.loads(e) for s, e in zip(images["source"].to_pylist(), images["entry"].to_pylist())}
        manifest.setdefault("inputs", {}).update(entries)
    return manifest


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
    manifest = _read_json(layout)
    manifest["last_run"] = run
    images = {s: e for s, e in inputs.items() if e.get("shard")}
    known = manifest.setdefault("inputs", {})
    for source, entry in inputs.items():
        if source in images:
            known.pop(source, None)  # (an entry from before images had their table)
        else:
            known[source] = entry
    table = _read_images(layout)
    if images or (table is not None and table.num_rows):
        old = table if table is not None else pa.table({"source": pa.array([], pa.string()),
                                                         "entry": pa.array([], pa.string())})
        keep = old.filter(pc.invert(pc.is_in(old["source"], pa.array(list(inputs), pa.string()))))
        if images or keep.num_rows != old.num_rows:
            new = pa.table({"source": pa.array(list(images), pa.string()),
                            "entry": pa.array([json.dumps(e, sort_keys=True) for e in images.values()], pa.string())})
            table = pa.concat_tables([keep.select(["source", "entry"]), new])
            write_parquet_atomic(table, layout.meta_dir / IMAGES, cache=True)
    write_bytes_atomic(layout.manifest, json.dumps(manifest, indent=2, sort_keys=True).encode())


def _read_json(layout: Layout) -> dict:
    try:
        return json.loads(layout.manifest.read_text())
    except (OSError, ValueError):
        return {"version": 1, "inputs": {}}


def _read_images(layout: Layout) -> pa.Table | None:
    try:
        return read_table(layout.meta_dir / IMAGES)
    except (OSError, ValueError, pa.ArrowException):
        return None
