"""Cache housekeeping: what an output folder's cache holds, and pruning what no label file needs.

Every label file names, in its footer (`CACHE_KEY`), the cache files it was made from
(its range's or shard's raw detections, kept indices, polygons and track ids, as paths
under `OUT/.segflow/cache/`). A cache file no label file names is unreachable: made with
settings the inputs are no longer labeled with, or for a shard that was cut again.

- After each successful group of a label run, `prune_inputs` removes the unreachable cache
  files of the inputs it labeled (it knows their cache files, and touches no others), so
  reruns with new settings do not grow the output without bound.
- `prune_all` (`segflow cache OUT --prune`) removes every unreachable cache file of the
  folder, read from the label files' footers; a label file from before footers named
  their cache files keeps its input's whole cache. Run it while no label run writes there.
- `cache_report` counts files and bytes of the label table and of each stage's cache.

What pruning gives up: a rerun that goes back to earlier settings recomputes what they
need (the model only if the model, its score floor or precision changed back).
"""

from __future__ import annotations

from collections.abc import Iterable

from segflow.storage.fs import is_remote
from segflow.storage.layout import HIDDEN, SHARDS, Layout, label_files
from segflow.storage.table import labels_meta

CACHE_KEY = "cache"  # label file footer: the cache files it was made from
_CACHE_DIR = f"/{HIDDEN}/cache/"


def cache_names(outputs: Iterable) -> list[str]:
    """Stage outputs (`StageOutput`s or None) -> their files' paths under the cache folder."""
    names = []
    for out in outputs:
        if out is not None and _CACHE_DIR in str(out.path).replace("\\", "/"):
            names.append(str(out.path).replace("\\", "/").split(_CACHE_DIR, 1)[1])
    return names


def prune_inputs(layout: Layout, parts: list[tuple[object, list[str]]], gone_shards: Iterable[str] = ()) -> int:
    """Remove the unreachable cache files of the inputs a run labeled; returns how many.

    `parts`: each labeled range or shard (a `VideoInfo`) with the cache files its label
    file was made from (`cache_names`). Removed: a video's other files in its folders of
    each stage, a shard's files of other keys, every file of the shards in `gone_shards`
    (cut again: their label files were removed), and the per-image folders of a shard's
    images (the layout before shards).
    """
    keep = {name for _, names in parts for name in names}
    folders: set[str] = set()  # stage-relative folders whose every unkept file goes
    prefixes: set[str] = set(gone_shards)  # shard ids whose unkept files go
    for video, _ in parts:
        if video.kind == "shard":
            prefixes.add(video.video_id)
            folders.update(m.video_id for m in video.members)
        else:
            folders.add(video.video_id)
    removed = 0
    try:
        stages = [p for p in layout.cache_dir.iterdir() if p.is_dir()]
    except (OSError, FileNotFoundError, NotImplementedError):
        return 0
    for stage in stages:
        try:
            present = {p.name: p for p in stage.iterdir()}
        except (OSError, NotImplementedError):
            continue
        candidates = [f for name in folders & present.keys() for f in _files(present[name])]
        if SHARDS in present and prefixes:
            candidates += [f for f in _files(present[SHARDS]) if f.name.rsplit("_", 1)[0] in prefixes]
        for f in candidates:
            if f"{stage.name}/{f.parent.name}/{f.name}" not in keep:
                f.unlink(missing_ok=True)
                removed += 1
        for name in folders & present.keys():
            _remove_if_empty(present[name])
    return removed


def reachable(layout: Layout) -> tuple[set[str], set[str]]:
    """(cache files named by a label file, folders of inputs whose label file names none)."""
    names: set[str] = set()
    unknown: set[str] = set()
    for path in label_files(layout.root):
        meta = labels_meta(path) or {}
        if CACHE_KEY in meta:
            names.update(meta[CACHE_KEY])
        elif "members" in meta:
            unknown.update(str(m[0]) for m in meta["members"])
        else:
            unknown.add(str(meta.get("video_id") or path.parent.name))
    return names, unknown


def _unreachable(layout: Layout) -> Iterable[tuple[object, int]]:
    """(file, bytes) of every cache file no label file needs."""
    names, unknown = reachable(layout)
    for f, size in _walk(layout):
        rel = f"{f.parent.parent.name}/{f.parent.name}/{f.name}"
        if rel not in names and f.parent.name not in unknown:
            yield f, size


def prune_all(layout: Layout) -> tuple[int, int]:
    """Remove every cache file no label file needs; returns (files, bytes) removed."""
    files = size = 0
    for f, n in list(_unreachable(layout)):
        f.unlink(missing_ok=True)
        files, size = files + 1, size + n
    return files, size


def cache_report(layout: Layout) -> dict:
    """Files and bytes of the label table, the manifest and each stage's cache, and of
    the cache files pruning would remove."""
    labels = [(p, _size(p)) for p in label_files(layout.root)]
    stages: dict[str, dict[str, int]] = {}
    for f, n in _walk(layout):
        entry = stages.setdefault(f.parent.parent.name, {"files": 0, "bytes": 0})
        entry["files"] += 1
        entry["bytes"] += n
    gone = list(_unreachable(layout))
    meta = [(p, _size(p)) for p in _files(layout.meta_dir)]
    return {
        "out": str(layout.root),
        "label_files": len(labels), "label_bytes": sum(n for _, n in labels),
        "cache_files": sum(s["files"] for s in stages.values()), "cache_bytes": sum(s["bytes"] for s in stages.values()),
        "other_files": len(meta), "other_bytes": sum(n for _, n in meta),
        "stages": dict(sorted(stages.items())),
        "unreachable_files": len(gone), "unreachable_bytes": sum(n for _, n in gone),
    }


def _walk(layout: Layout) -> Iterable[tuple[object, int]]:
    """(file, bytes) of every cache file: `cache/<stage>/<folder>/<file>.pq`."""
    try:
        stages = [p for p in layout.cache_dir.iterdir() if p.is_dir()]
    except (OSError, FileNotFoundError, NotImplementedError):
        return
    for stage in stages:
        for folder in stage.iterdir():
            if folder.is_dir():
                for f in _files(folder):
                    if f.suffix == ".pq":
                        yield f, _size(f)


def _files(folder) -> list:
    try:
        return [p for p in folder.iterdir() if p.is_file()]
    except (OSError, NotImplementedError):
        return []


def _size(path) -> int:
    try:
        return int(path.stat().st_size)
    except (OSError, AttributeError):
        return 0


def _remove_if_empty(folder) -> None:
    """Remove a local folder left empty (an object store has no folders: an S3Path's
    rmdir would remove the files in it)."""
    if is_remote(folder):
        return
    try:
        folder.rmdir()  # only when empty
    except OSError:
        pass
