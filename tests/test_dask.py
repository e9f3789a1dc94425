"""The Dask task runner: a local cluster of 2 workers gives the same table as threads."""

from __future__ import annotations

import pandas as pd
import pytest

from segflow.cli import run_label
from tests.conftest import REPO

pytest.importorskip("prefect_dask")


def table(out) -> pd.DataFrame:
    df = pd.read_parquet(out)
    return df.sort_values(["source", "frame", "object_id"]).reset_index(drop=True)


def test_dask_runner_matches_threads(clip, image, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # workers import the test model from tests/
    settings = dict(model="test-color", frames_per_range=4)
    run_label([str(clip), str(image)], str(tmp_path / "threads"), **settings)
    run_label([str(clip), str(image)], str(tmp_path / "dask"), runner="dask", dask_workers=2, **settings)
    pd.testing.assert_frame_equal(table(tmp_path / "threads"), table(tmp_path / "dask"))
