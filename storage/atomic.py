"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import errno
import os
import uuid
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from segflow.errors import OutputFailed
from segflow.storage.fs import is_remote

# errno values of a write that no retry can fix: full disk or quota, read-only, forbidden,
# a folder that is gone or is a file
FATAL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT,
                          errno.ENOTDIR, errno.EISDIR, errno.EFBIG})


@contextmanager
def _fatal_as_output_failed(path):
    """Turn a write error no retry can fix into `OutputFailed` (one line, not retried)."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in FATAL_ERRNOS:
            raise
        reason = os.strerror(exc.errno)
        raise OutputFailed(f"cannot write {path} ({reason})", reason=reason) from exc
    except Exception as exc:
        if not from_object_store(exc):
            raise
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
        raise OutputFailed(f"cannot write {path} ({reason})", reason=reason) from exc


def from_object_store(exc: BaseException) -> bool:
    """Whether an error, or one it came from, was raised by an object store's client."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc).__module__.split(".")[0] in ("botocore", "aiobotocore", "aiohttp", "s3fs"):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _tmp_path(path: Path) -> Path:
    # Hidden and suffixed so neither pyarrow datasets nor `*.parquet` globs see it.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    IN_FLIGHT.add(tmp)
    return tmp


IN_FLIGHT: set[Path] = set()  # temporary files of writes under way in this process


def discard_in_flight() -> None:
    """Remove the temporary files of the writes under way (a process about to `os._exit`
    on a signal: it leaves no `.tmp` file beside the label table)."""
    for tmp in list(IN_FLIGHT):
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


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
        with _fatal_as_output_failed(path):
            path.write_bytes(data)
        return path
    path = Path(path)
    tmp = _tmp_path(path)
    try:
        with _fatal_as_output_failed(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            _publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        IN_FLIGHT.discard(tmp)
    return path


def write_parquet_atomic(table: pa.Table, path, cache: bool = False):
    """Write an Arrow table as Parquet at `path`, atomically (temp file, fsync, rename).

    `cache`: a stage's cached output, read back only by segflow (`_write_cache`). The label
    table is written with pyarrow's defaults and column statistics (DuckDB prunes row groups
    by them)."""
    if is_remote(path):
        sink = pa.BufferOutputStream()
        _write(table, sink, cache)
        return write_bytes_atomic(path, sink.getvalue().to_pybytes())
    path = Path(path)
    tmp = _tmp_path(path)
    try:
        with _fatal_as_output_failed(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            _write(table, tmp, cache)
            _publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        IN_FLIGHT.discard(tmp)
    return path


CACHE_ZSTD_LEVEL = 9  # cache files: written once per shard or range, read by every rerun (decoding costs the same)


def cache_encodings(schema: pa.Schema) -> dict[str, str]:
    """Parquet encodings of a cache file's columns, by leaf path: floats byte-stream-split
    (the bytes of each position together: exponents with exponents), integers delta-packed
    (frames, indices and labels run in order or repeat); the rest (RLE counts, WKB) plain."""
    out: dict[str, str] = {}

    def leaf(name: str, typ: pa.DataType) -> None:
        if pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ):
            leaf(f"{name}.list.element", typ.value_type)
        elif pa.types.is_floating(typ) and not pa.types.is_float16(typ):
            out[name] = "BYTE_STREAM_SPLIT"
        elif pa.types.is_int32(typ) or pa.types.is_int64(typ):
            out[name] = "DELTA_BINARY_PACKED"

    for f in schema:
        leaf(f.name, f.type)
    return out


def _write(table: pa.Table, where, cache: bool) -> None:
    """`table` as Parquet into `where` (a local path or an Arrow sink). A cache file is
    written without column statistics (nothing filters these files), without dictionary
    pages (its columns are mostly distinct values: RLE masks, scores, boxes) and without
    the serialized Arrow schema, whose copy of the footer metadata (a shard's member list)
    doubled it: the metadata goes into the Parquet footer alone, where `read_schema` finds
    it (columns read back as their Parquet types: a fixed-size list as a list). For a
    shard's raw detections: 25.4 -> 18.2 KB."""
    if not cache:
        pq.write_table(table, where, compression="zstd")
        return
    meta = table.schema.metadata
    with pq.ParquetWriter(where, table.schema.remove_metadata(), compression="zstd", compression_level=CACHE_ZSTD_LEVEL,
                          write_statistics=False, use_dictionary=False, store_schema=False,
                          column_encoding=cache_encodings(table.schema)) as writer:
        writer.write_table(table.replace_schema_metadata(None))
        if meta:
            writer.add_key_value_metadata(meta)
