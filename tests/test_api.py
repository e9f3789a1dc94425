"""The Python API, through `import segflow` only (plus the CLI it must agree with)."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import shapely
from pycocotools.coco import COCO

import segflow
from segflow.cli import main
from segflow.settings import in_python_terms

sv = pytest.importorskip("supervision")
try:
    from tests.test_s3 import s3  # noqa: F401 - the moto S3 server fixture
except pytest.skip.Exception:  # s3fs or moto not installed
    s3 = None

SETTINGS = dict(model="test-color", frames_per_range=5, coarseness=0.0)
FLAGS = ["--model", "test-color", "--frames-per-range", "5", "--coarseness", "0"]


@pytest.fixture(scope="module")
def api_labels(clip, tmp_path_factory) -> segflow.LabelSet:
    return segflow.label(clip, tmp_path_factory.mktemp("api") / "labels", **SETTINGS)


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["source", "frame", "object_id"], kind="stable").reset_index(drop=True)


def test_label_gives_the_table_of_the_cli_in_a_flow_run(api_labels, clip, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    cli_out = tmp_path / "cli"
    assert main(["label", str(clip), "--out", str(cli_out), *FLAGS]) == 0
    cli_table = pd.read_parquet(cli_out)
    assert len(cli_table) == 36
    pd.testing.assert_frame_equal(_sorted(pd.read_parquet(api_labels.out)), _sorted(cli_table))
    opened = segflow.open(cli_out).table
    assert isinstance(opened["geometry"].iloc[0], shapely.Polygon | shapely.MultiPolygon)
    assert list(opened["geometry"].map(shapely.to_wkb)) == list(_sorted(cli_table)["geometry"])
    pd.testing.assert_frame_equal(api_labels.table.drop(columns="geometry"), opened.drop(columns="geometry"))

    assert api_labels.summary["inputs"][0]["status"] == "ok"
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["label"])))
    (run,) = [r for r in runs if r.parameters.get("out") == api_labels.out]
    assert run.state.is_completed() and run.parameters["settings"]["coarseness"] == 0.0


def test_to_supervision_round_trips_the_table(api_labels):
    table = pd.read_parquet(api_labels.out)
    (item,) = api_labels.inputs
    assert api_labels.frames(item.video_id) == list(range(12)) and item.kind == "video"
    assert api_labels.classes == ("circle", "square", "ring")  # the model's ontology order
    for frame in api_labels.frames(item.video_id):
        det = api_labels.to_supervision(item.video_id, frame)
        rows = table[table.frame == frame].sort_values("object_id")
        assert len(det) == len(rows) == 3
        assert list(det.data["object_id"]) == list(rows.object_id)
        assert list(det.tracker_id) == list(rows.track_id)
        assert [api_labels.classes[c] for c in det.class_id] == list(rows.class_name)
        np.testing.assert_array_equal(det.confidence, rows.confidence.to_numpy())
        np.testing.assert_array_equal(det.xyxy, rows[["x0", "y0", "x1", "y1"]].to_numpy())
        # pixel (r, c) = [c, c+1] x [r, r+1] is in a mask when its centre is inside the polygon
        # (a centre exactly on the outline is the rasterizer's tie to break)
        yy, xx = np.mgrid[0:240, 0:320] + 0.5
        for mask, blob in zip(det.mask, rows.geometry):
            geom = shapely.from_wkb(blob)
            assert mask.dtype == bool and mask.shape == (240, 320)
            off = (mask != shapely.contains_xy(geom, xx, yy)) & ~shapely.intersects_xy(geom.boundary, xx, yy)
            assert not off.any(), np.argwhere(off)[:5]
        np.testing.assert_array_equal(det.mask, api_labels.masks(item.video_id, frame))


def test_masks_agree_with_the_coco_export_pixel_for_pixel(labeled, tmp_path):
    labels = segflow.open(labeled)  # the default coarseness: polygons with fractional vertices
    path = labels.export("coco", tmp_path)
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(path))
    drawn = 0  # annotations the export rasterized itself (RLE: shapes with holes)
    for image in coco.loadImgs(coco.getImgIds()):
        masks = labels.masks(image["video_id"], image["frame_index"])
        rows = labels.rows(image["video_id"], image["frame_index"])
        ids = list(rows.object_id)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image["id"])):
            i = ids.index(ann["object_id"])
            theirs = coco.annToMask(ann).astype(bool)
            if isinstance(ann["segmentation"], dict):  # the exports' rasterizer's pixels
                np.testing.assert_array_equal(masks[i], theirs)
                drawn += 1
            else:  # polygons pycocotools draws, its vertices snapped to 1/5 px: a pixel whose
                # centre lies that close to the outline may go either way; no other may differ
                rr, cc = np.nonzero(masks[i] != theirs)
                outline = rows.geometry.iloc[i].boundary
                assert (shapely.distance(outline, shapely.points(cc + 0.5, rr + 0.5)) <= 0.2).all()
    assert drawn == 12 and len(coco.getAnnIds()) == len(labels.table) == 36  # the ring has a hole


def test_iter_frames_yields_the_clip_with_its_detections(api_labels, clip):
    from tests import clips

    truth = clips.render(n_frames=12)
    got = list(api_labels.iter_frames(frames=[0, 5, 11]))
    assert [f.frame for f in got] == [0, 5, 11]
    for frame, image, det in got:
        assert image.size == (320, 240) and image.mode == "RGB"
        assert np.abs(np.asarray(image, np.int16) - truth[frame]).mean() < 4  # h264 round trip
        assert list(det.data["object_id"]) == list(api_labels.to_supervision(str(clip), frame).data["object_id"])
    annotated = sv.MaskAnnotator().annotate(got[0].image.copy(), got[0].detections)
    assert annotated.size == (320, 240) and annotated.tobytes() != got[0].image.tobytes()


@pytest.mark.skipif(s3 is None, reason="needs s3fs and moto")
def test_label_and_open_on_s3(s3, clip, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGFLOW_CACHE", str(tmp_path / "cache"))
    s3.put(str(clip), "inbox/a.mp4")
    made = segflow.label("s3://inbox/a.mp4", "s3://labels/run", model="test-color", frames_per_range=5,
                         tracking=False)
    labels = segflow.open("s3://labels/run")
    assert made.out == labels.out == "s3://labels/run"
    assert len(labels.table) == 36 and set(labels.table.source) == {"s3://inbox/a.mp4"}
    assert labels.frames() == list(range(12)) and labels.masks(None, 11).shape == (3, 240, 320)
    frame, image, det = next(labels.iter_frames("s3://inbox/a.mp4", frames=[7]))
    assert frame == 7 and image.size == (320, 240) and len(det) == 3
    assert det.tracker_id is None and labels.table.object_id.is_unique  # tracking off
    # Exports of a set on S3, to S3 or to a local file, as `segflow export` writes them.
    s3.mkdir("exports")
    written = labels.export("coco", "s3://exports/run/coco.json")
    assert str(written) == "s3://exports/run/coco.json"
    doc = json.loads(s3.cat("exports/run/coco.json"))
    assert len(doc["images"]) == 12 and len(doc["annotations"]) == 36
    assert all(s3.exists(f"exports/run/{im['file_name']}") for im in doc["images"])  # the frames it names
    assert str(labels.export("cvat", "s3://exports/review/")) == "s3://exports/review"  # a folder: <video>.xml
    assert s3.cat("exports/review/a.xml").startswith(b"<?xml")
    rows = json.loads(labels.export("encord", tmp_path / "rows.json").read_text())
    assert sum(len(f["objects"]) for f in next(iter(rows[0]["data_units"].values()))["labels"].values()) == 36
    with pytest.raises(segflow.SegflowError, match="bucket does not exist"):
        labels.export("coco", "s3://no-such-bucket/coco.json")
    with pytest.raises(segflow.SegflowError, match="give --image-prefix"):
        labels.export("label-studio", "s3://exports/ls.json")
    assert main(["export", "s3://labels/none", "--format", "coco", "--to", str(tmp_path / "c.json")]) == 2
    assert not s3.exists("exports/ls.json") and not (tmp_path / "c.json").exists()


def test_an_input_without_instances(tmp_path):
    from PIL import Image

    Image.new("RGB", (64, 48), (120, 120, 120)).save(tmp_path / "blank.png")
    labels = segflow.label(tmp_path / "blank.png", tmp_path / "labels", model="test-color")
    (item,) = labels.inputs
    assert (item.kind, item.frames, item.instances, item.width, item.height) == ("image", (0,), 0, None, None)
    assert len(labels.table) == 0 and labels.masks(None, 0).shape == (0, 48, 64)
    frame, image, det = next(labels.iter_frames())
    assert frame == 0 and image.size == (64, 48) and len(det) == 0 and det.mask.shape == (0, 48, 64)
    assert sv.MaskAnnotator().annotate(image.copy(), det).size == (64, 48)


BAD = {  # keyword arguments -> the same flags on the command line
    "confidence": (dict(confidence=1.5), ["--confidence", "1.5"]),
    "coarseness": (dict(coarseness=-1.0), ["--coarseness", "-1"]),
    "device": (dict(device="gpu"), ["--device", "gpu"]),
    "start_after_end": (dict(start_frame=5, end_frame=2), ["--start-frame", "5", "--end-frame", "2"]),
    "start_beyond_video": (dict(start_frame=12), ["--start-frame", "12"]),
    "unknown_model": (dict(model="no-such-model"), ["--model", "no-such-model"]),
    "runner": (dict(runner="foo"), ["--runner", "foo"]),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_settings_raise_the_cli_message(name, clip, tmp_path, capsys):
    kwargs, flags = BAD[name]
    out = tmp_path / "out"
    with pytest.raises(segflow.SegflowError) as caught:
        segflow.label(str(clip), out, **{"model": "test-color", **kwargs})
    assert main(["label", str(clip), "--out", str(out), "--model", "test-color", *flags]) == 2
    cli_message = capsys.readouterr().err.strip().removeprefix("segflow: error: ")
    # the same check and words, naming the keyword argument where the CLI names its flag
    assert str(caught.value) == in_python_terms(cli_message) and "--" not in str(caught.value), caught.value
    assert not out.exists()


def test_bad_input_and_folders_raise_segflow_error(tmp_path, api_labels):
    with pytest.raises(segflow.SegflowError, match="no such file"):
        segflow.label(tmp_path / "missing.mp4", tmp_path / "out", model="test-color")
    with pytest.raises(segflow.SegflowError, match="extra inputs are not permitted"):
        segflow.label(tmp_path / "missing.mp4", tmp_path / "out", confidance=0.5)
    with pytest.raises(segflow.SegflowError, match="no label table"):
        segflow.open(tmp_path)
    with pytest.raises(segflow.SegflowError, match="frame 12 .* was not labeled"):
        api_labels.masks(None, 12)
    with pytest.raises(segflow.SegflowError, match="not in"):
        api_labels.to_supervision("0123456789abcdef", 0)
    assert not (tmp_path / "out").exists()


def test_help_lists_every_setting():
    from segflow.settings import LabelSettings

    doc = segflow.label.__doc__
    for name, info in LabelSettings.model_fields.items():
        assert f"    {name}: " in doc and repr(info.default) in doc, name
    import inspect

    assert set(LabelSettings.model_fields) <= set(inspect.signature(segflow.label).parameters)


def test_import_and_reading_need_neither_torch_nor_prefect(api_labels):
    code = (
        "import sys, segflow; labels = segflow.open(sys.argv[1]); labels.table; labels.inputs; "
        "labels.frames(); labels.rows(None, 0); labels.masks(None, 0); labels.to_supervision(None, 0); "
        "print(sorted({'torch', 'prefect', 'decord'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code, api_labels.out], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stderr


def readme_blocks(section: str = "## Python") -> list[tuple[str, str]]:
    """(language, code) of every fenced block in one section of README.md."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    body = text.split(f"\n{section}\n", 1)[1].split("\n## ", 1)[0]
    parts = body.split("```")[1::2]  # the insides of the fences
    return [(p.split("\n", 1)[0].strip(), p.split("\n", 1)[1]) for p in parts]


def test_readme_python_example_runs_as_written(tmp_path, monkeypatch):
    import os

    blocks = readme_blocks()
    assert [lang for lang, _ in blocks] == ["bash", "python"]
    monkeypatch.chdir(tmp_path)
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["bash", "-euo", "pipefail", "-c", blocks[0][1]], check=True, env=env, capture_output=True)
    namespace: dict = {}
    exec(compile(blocks[1][1], "README.md (Python)", "exec"), namespace)

    labels, detections, objects = namespace["labels"], namespace["detections"], namespace["objects"]
    assert namespace["annotated"].size == (320, 240) and len(detections) > 0
    assert len(labels.frames(namespace["clip"].video_id)) == 8
    assert set(objects.class_name) <= set(labels.classes) and objects.instances.sum() == len(labels.table)
    assert (tmp_path / "coco.json").is_file()
