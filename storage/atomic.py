"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from segflow.storage.fs import is_remote


def _tmp_path(path: Path) -> Path:
    # Hidden and suffixed so neither pyarrow datasets nor `*.parquet` globs see it.
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def _publish(tmp: Path, path: Path) -> None:
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_bytes_atomic(path, data: bytes):
    """Write `data` to `path` via a temporary file in the same folder and a rename.

    In an object store a PUT is already atomic: the object appears whole or not at all.
    """
    if is_remote(path):
        path.write_bytes(data)
        return path
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        tmp.write_bytes(data)
        _publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_parquet_atomic(table: pa.Table, path):
    """Write an Arrow table as Parquet at `path`, atomically (temp file, fsync, rename)."""
    if is_remote(path):
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        return write_bytes_atomic(path, sink.getvalue().to_pybytes())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        pq.write_table(table, tmp, compression="zstd")
        _publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
