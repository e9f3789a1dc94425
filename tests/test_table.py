"""The output table reads back with pandas and DuckDB, with the spec's columns and types."""

from __future__ import annotations

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds

from segflow.cli import run_label

SPEC = {
    "source": pa.string(), "video_id": pa.string(), "frame": pa.int32(), "timestamp_s": pa.float64(),
    "object_id": pa.string(), "track_id": pa.int64(), "class_name": pa.string(), "feature_hash": pa.string(),
    "confidence": pa.float32(), "x0": pa.float32(), "y0": pa.float32(), "x1": pa.float32(), "y1": pa.float32(),
    "geometry": pa.binary(), "vertex_count": pa.int32(), "area_px": pa.float64(), "width": pa.int32(),
    "height": pa.int32(), "model_id": pa.string(), "params_hash": pa.string(),
}


def test_table_reads_back(clip, tmp_path):
    out = tmp_path / "o"
    run_label([str(clip)], str(out), model="test-color", frames_per_range=5)
    schema = ds.dataset(out, format="parquet").schema
    assert {name: schema.field(name).type for name in SPEC} == SPEC
    df = pd.read_parquet(out)
    assert len(df) == 36
    rows = duckdb.sql(
        f"select count(*), count(distinct object_id), min(frame), max(frame) from read_parquet('{out}/**/*.parquet')"
    ).fetchall()[0]
    assert rows == (36, 3, 0, 11)
    assert len(list(out.glob("*/*.parquet"))) == 3  # one file per frame range


def test_a_replaced_cache_file_is_read_again(tmp_path):
    """Reads are cached in process while a file is unchanged; an atomic rewrite (how every
    segflow file is written) is a new file to the cache, whatever its size and mtime."""
    import os

    import numpy as np

    from segflow.storage.fs import read_table
    from segflow.storage.table import load_indices, save_indices

    path = tmp_path / "kept.pq"
    save_indices(np.array([1, 2, 3]), path)
    first = read_table(path)
    assert read_table(path) is first  # unchanged: served from memory
    stat = path.stat()
    save_indices(np.array([7, 8, 9]), path)  # same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # and the same mtime
    assert load_indices(path).tolist() == [7, 8, 9]
    assert read_table(path, columns=["index"]).column(0).to_pylist() == [7, 8, 9]
