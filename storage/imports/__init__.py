"""Imports: reviewed labels (COCO, Encord label rows, CVAT XML) back into a segflow label table.

    import_labels(["reviewed.xml"], "cvat", "reviewed/")   # -> summary dict

Every file is read and checked before anything is written; the output folder must not
hold a label table already. `model_id` of the rows says where they came from
(`import:<format>:<file names>`), `params_hash` is a digest of the files' bytes.
"""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from pathlib import Path

from segflow.errors import SegflowError
from segflow.storage.imports.coco import read_coco
from segflow.storage.imports.common import ImportedInput, write_table
from segflow.storage.imports.cvat import read_cvat
from segflow.storage.imports.encord import read_encord
from segflow.storage.layout import check_folder_writable

FORMATS = ("coco", "encord", "cvat")
_READERS = {"coco": read_coco, "encord": read_encord, "cvat": read_cvat}


def check_import(files: list[str], fmt: str, out: str) -> tuple[list[Path], str, Path]:
    """Validate the arguments (writes nothing): existing files, a known format, a writable,
    table-free output folder."""
    name = str(fmt).strip().lower()
    if name not in FORMATS:
        raise SegflowError(f"--format {fmt!r}: unknown import format (allowed: {', '.join(FORMATS)})")
    if not files:
        raise SegflowError("FILE: give at least one file to import")
    paths = [Path(f).expanduser() for f in files]
    for p in paths:
        if not p.is_file():
            raise SegflowError(f"FILE {p}: no such file")
    root = Path(out).expanduser()
    check_folder_writable(root, f"--out {out}")
    if root.is_dir() and any(p for p in root.glob("*/*.parquet") if not p.parent.name.startswith(".")):
        raise SegflowError(f"--out {out}: already holds a label table (import into a new folder)")
    return paths, name, root


def read_files(paths: list[Path], fmt: str) -> list[ImportedInput]:
    """Every input of the files, merged by video_id (instances of one video in two files join)."""
    merged: dict[str, ImportedInput] = {}
    for p in paths:
        for item in _READERS[fmt](p, _parse(p, fmt)):
            if item.video_id in merged:
                have = merged[item.video_id]
                have.frames |= item.frames
                have.instances += item.instances
                have.timestamps |= item.timestamps
            else:
                merged[item.video_id] = item
    return list(merged.values())


def import_labels(files: list[str], fmt: str, out: str) -> dict:
    """Import reviewed labels from `files` (format `fmt`) into a label table in `out`."""
    paths, name, root = check_import(files, fmt, out)
    inputs = read_files(paths, name)
    if not any(i.instances or i.frames for i in inputs):
        raise SegflowError(f"FILE {paths[0]}: no labeled frames in it")
    digest = hashlib.blake2b(digest_size=8)
    for p in paths:
        digest.update(p.read_bytes())
    model_id = f"import:{name}:{','.join(p.name for p in paths)}"
    return write_table(inputs, root, model_id, digest.hexdigest())


def _parse(path: Path, fmt: str):
    try:
        if fmt == "cvat":
            return ET.parse(path).getroot()
        return json.loads(path.read_text())
    except (ET.ParseError, ValueError, UnicodeDecodeError) as exc:
        kind = "XML" if fmt == "cvat" else "JSON"
        raise SegflowError(f"FILE {path}: not valid {kind} ({str(exc).splitlines()[0][:160]})") from None
