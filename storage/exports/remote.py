"""Exports of or to an object store (`s3://`): through a local folder.

An export is built from a local label table and written to a local folder (frames
beside it, several files for CVAT), so an object-store label folder is copied down
first (its Parquet files and run manifest, not its cache) and an object-store target
gets the finished export uploaded once it is complete, each file in one PUT (none is
ever seen half-written).
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

from segflow.errors import SegflowError
from segflow.storage.exports.target import is_uri
from segflow.storage.fs import as_path
from segflow.storage.layout import HIDDEN


def check_remote_target(to: str) -> None:
    """Refuse an object-store `--to` whose bucket cannot be reached or does not exist."""
    root = as_path(to)
    bucket = root.parts[0].rstrip("/") if root.parts else ""
    try:
        found = bool(bucket) and root.fs.exists(bucket)
    except Exception as exc:  # noqa: BLE001 - credentials, endpoint, network: one line
        raise SegflowError(f"--to {to}: object store not reachable ({type(exc).__name__}: {exc})") from None
    if not found:
        raise SegflowError(f"--to {to}: bucket does not exist")


def label_files_of(out: str) -> list[str]:
    """The label table's Parquet objects of an object-store output folder (its cache
    excluded), or one clear SegflowError when it holds none."""
    root = as_path(out)
    try:
        found = root.fs.glob(f"{root.path.rstrip('/')}/*/*.parquet")
    except Exception as exc:  # noqa: BLE001 - credentials, endpoint, network: one line
        raise SegflowError(f"LABELS {out}: object store not reachable ({type(exc).__name__}: {exc})") from None
    files = sorted(f for f in found if not posixpath.basename(posixpath.dirname(f)).startswith("."))
    if not files:
        raise SegflowError(f"LABELS {out}: no label table here (run `segflow label ... --out {out}` first)")
    return files


def copy_labels_down(out: str, into: Path) -> Path:
    """The label table and run manifest of an object-store output folder copied into
    the local folder `into` (its layout kept); returns `into`."""
    root = as_path(out)
    base = root.path.rstrip("/")
    wanted = label_files_of(out)
    manifest = f"{base}/{HIDDEN}/manifest.json"
    if root.fs.exists(manifest):
        wanted.append(manifest)
    for remote in wanted:
        local = into / posixpath.relpath(remote, base)
        local.parent.mkdir(parents=True, exist_ok=True)
        root.fs.get_file(remote, str(local))
    return into


def upload(staging: Path, folder: str) -> None:
    """Every file under the local folder `staging` uploaded under `folder` (a URI), paths kept."""
    root = as_path(folder)
    base = root.path.rstrip("/")
    try:
        for path in sorted(p for p in staging.rglob("*") if p.is_file()):
            root.fs.put_file(str(path), f"{base}/{path.relative_to(staging).as_posix()}")
    except Exception as exc:  # noqa: BLE001 - permissions, endpoint, network: one line
        raise SegflowError(f"--to {folder}: cannot write ({type(exc).__name__}: {exc})") from None
