"""Shared fixtures: one Prefect test server per session, test clips, a counting model."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

from tests import clips
from tests.color_model import CLASSES, ColorModel  # noqa: F401  (registers "test-color")

# Read when Prefect is first imported (the imports above do not import it) and by
# segflow.cli.main: no network here, and a `segflow server` the developer runs is not
# the tests' server (main finds none in this SEGFLOW_HOME)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ["SEGFLOW_HOME"] = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"segflow-tests-{os.getpid()}")

REPO = Path(__file__).resolve().parents[1]


def bench_module(name: str):
    """`bench/<name>.py` as `python bench/<name>.py` sees it: bench/ is a folder of scripts whose
    helpers import each other by plain name (`import parts`), so bench/ goes on `sys.path`
    (appended: an installed package of the same name would come first; none exists)."""
    bench = str(REPO / "bench")
    if bench not in sys.path:
        sys.path.append(bench)
    return importlib.import_module(name)

@pytest.fixture(autouse=True, scope="session")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    from prefect import flow

    with prefect_test_harness(server_startup_timeout=90):
        # Run one flow now so Prefect's console log handler binds to the session's
        # stderr, not to a capsys stream that a later test closes.
        flow(lambda: None, name="warm-up")()
        yield


@pytest.fixture
def model_calls():
    """Reset and read ColorModel's forward-call counter."""
    ColorModel.calls = 0
    return lambda: ColorModel.calls


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clips") / "shapes.mp4"
    return clips.write_mp4(path, clips.render(n_frames=12))


@pytest.fixture(scope="session")
def image(tmp_path_factory) -> Path:
    from PIL import Image

    path = tmp_path_factory.mktemp("images") / "still.png"
    Image.fromarray(clips.render(n_frames=1)[0]).save(path)
    return path


@pytest.fixture(scope="module")
def labeled(clip, tmp_path_factory) -> Path:
    """The clip labeled with the test model (once per test module)."""
    from segflow.cli import run_label

    out = tmp_path_factory.mktemp("labeled") / "labels"
    run_label([str(clip)], str(out), model="test-color", frames_per_range=5)
    return out


@pytest.fixture(scope="module")
def table(labeled):
    """The label table of `labeled`."""
    import pandas as pd

    return pd.read_parquet(labeled)
