"""Where an export goes: the one rule for what `--to` means, local path or object store.

`--to` names a folder when it ends in `/`, is an existing local folder, or its last part
has no suffix (`review`, `s3://bucket/exports`); a folder gets each format's default file
name. Anything else (`coco.json`, `s3://bucket/run/coco.json`, an existing file) names
the file itself.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

from segflow.errors import SegflowError
from segflow.storage.fs import REMOTE_SCHEMES, scheme_of
from segflow.storage.layout import check_folder_writable

DEFAULT_FILE_NAMES = {"coco": "coco.json", "encord": "encord_label_rows.json", "youtube-vis": "youtube_vis.json",
                      "cvat": "cvat.xml", "label-studio": "label_studio_tasks.json"}


def default_file_name(fmt: str) -> str:
    """The file written when --to is a folder."""
    return DEFAULT_FILE_NAMES[fmt]


def is_uri(location: str | os.PathLike) -> bool:
    """Whether `location` names an object store (`s3://...`)."""
    return scheme_of(os.fspath(location)) in REMOTE_SCHEMES


def names_folder(to: str | os.PathLike) -> bool:
    """Whether `--to` names a folder (module docstring): the same answer for a local path
    and an object-store URI, except that only a local path is looked up on disk."""
    text = os.fspath(to)
    if text.endswith(("/", os.sep)):
        return True
    if is_uri(text):
        rest = text.split("://", 1)[1]
        return "/" not in rest or "." not in posixpath.basename(rest)  # a bucket alone is a folder
    path = Path(text).expanduser()
    if path.exists():
        return path.is_dir()
    return not path.suffix


def split_target(to: str) -> tuple[str, str | None]:
    """(folder URI, file name or None) of an object-store `--to` (`names_folder`'s rule)."""
    text = to.rstrip("/")
    if names_folder(to):
        return text, None
    return posixpath.split(text)


def resolve_target(to: str | Path, fmt: str) -> Path:
    """The local file `--to` means (a folder gets `default_file_name`), refusing one that
    cannot be written. Writes nothing: a folder to be created is checked only."""
    path = Path(to).expanduser()
    if names_folder(to):
        path = path / default_file_name(fmt)
    path = path.resolve()
    check_folder_writable(path.parent, f"--to {to}")
    if path.exists() and not os.access(path, os.W_OK):
        raise SegflowError(f"--to {to}: file is not writable")
    return path
