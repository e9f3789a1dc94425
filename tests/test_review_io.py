"""Into the review tools and back: CVAT XML read by datumaro, imports of COCO/Encord/CVAT, compare.

The clip: a circle that leaves for three frames and comes back, a ring (a hole) and a
square split in two by a bar (parts), labeled by the test model.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely

from segflow.cli import main
from segflow.compare import compare_tables
from segflow.storage.exports import export_labels
from segflow.storage.exports.common import geometry_mask
from segflow.storage.imports import import_labels
from tests import clips

GONE = (5, 6, 7)  # frames the circle is away


def review_tool(module: str):
    """A review tool's own reader (the review-tools extra). Skipped where it is not
    installed, except in CI (CI set), where .ci/run installs it: a missing one fails."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return importlib.import_module(module)
    return pytest.importorskip(module)


@pytest.fixture(scope="module")
def occluded(tmp_path_factory):
    """A clip with holes, parts and an object that leaves and returns, labeled."""
    from segflow.cli import run_label

    frames = clips.render(n_frames=12)
    for t in GONE:
        frames[t][clips.disk(240, 320, 60, 40 + 6 * t, 24)] = 120
    root = tmp_path_factory.mktemp("occluded")
    clip = clips.write_mp4(root / "occluded.mp4", frames)
    run_label([str(clip)], str(root / "labels"), model="test-color", frames_per_range=6)
    return root / "labels"


@pytest.fixture(scope="module")
def table(occluded) -> pd.DataFrame:
    return pd.read_parquet(occluded).sort_values(["frame", "object_id"]).reset_index(drop=True)


def _iou(a: bytes, b, h: int = 240, w: int = 320) -> float:
    ma = geometry_mask(shapely.from_wkb(a), h, w)
    mb = b if isinstance(b, np.ndarray) else geometry_mask(shapely.from_wkb(b), h, w)
    return float((ma & mb).sum() / max((ma | mb).sum(), 1))


def test_the_clip_has_holes_parts_and_a_gap(table):
    geoms = {c: shapely.from_wkb(g) for c, g in zip(table.class_name, table.geometry)}
    assert len(geoms["ring"].interiors) == 1 and len(geoms["square"].geoms) == 2
    circle = table[table.class_name == "circle"]
    assert circle.object_id.nunique() == 1 and not set(GONE) & set(circle.frame)
    assert table.review_priority.dtype == np.float32


def _datumaro_cvat(path, width: int, height: int):
    """datumaro's own CVAT importer, run as README's snippet says (datumaro 1.13 reads a
    `<mask>` inside a `<track>` with the `<image>` size it has only for image tasks: the
    README hands it the XML's `<original_size>`, which must be the frame size)."""
    import textwrap
    import xml.etree.ElementTree as ET

    from tests.test_api import readme_blocks

    review_tool("datumaro")
    from datumaro.plugins.data_formats.cvat.base import CvatBase

    size = ET.parse(path).find("meta/task/original_size")
    assert (int(size.findtext("width")), int(size.findtext("height"))) == (width, height)
    code = next(textwrap.dedent(c) for lang, c in readme_blocks("## Review: into the labeling tools and back")
                if lang == "python" and "CvatBase" in c)
    original = CvatBase.__dict__["_parse_shape_ann"]
    namespace: dict = {}
    try:
        exec(compile(code.replace('"review/shapes.xml"', repr(str(path))), "README.md (datumaro)", "exec"), namespace)
    finally:
        CvatBase._parse_shape_ann = original
    return namespace["dataset"]


@pytest.mark.review_tools
def test_cvat_video_read_back_by_datumaro(occluded, table, tmp_path):
    path = export_labels(occluded, "cvat", tmp_path / "video.xml")
    ds = _datumaro_cvat(path, 320, 240)
    names = ds.categories()[__import__("datumaro").AnnotationType.label]
    tracks: dict[int, dict] = {}
    for item in ds:
        frame = int(item.id.rsplit("_", 1)[-1])
        for ann in item.annotations:
            t = tracks.setdefault(ann.attributes["track_id"], {"frames": [], "outside": [], "labels": set()})
            assert ann.attributes["keyframe"] is True
            if ann.attributes["outside"]:
                t["outside"].append(frame)
                continue
            t["frames"].append(frame)
            t["labels"].add(names[ann.label].name)
            row = table[(table.frame == frame) & (table.object_id == ann.attributes["object_id"])].iloc[0]
            drawn = ann.image.astype(bool) if hasattr(ann, "image") else geometry_mask(
                shapely.Polygon(np.reshape(ann.points, (-1, 2))), 240, 320)
            assert _iou(row.geometry, drawn) >= 0.99
            assert ann.attributes["score"] == pytest.approx(row.confidence, abs=1e-5)
    assert len(tracks) == table.object_id.nunique() == 3
    for oid, g in table.groupby("object_id"):
        t = tracks[int(g.track_id.iloc[0])]
        assert sorted(t["frames"]) == sorted(g.frame) and t["labels"] == {g.class_name.iloc[0]}
    circle = tracks[int(table[table.class_name == "circle"].track_id.iloc[0])]
    assert circle["outside"] == [GONE[0]]  # it leaves once; it is back on a keyframe after


@pytest.mark.parametrize("fmt", ["coco", "encord", "cvat"])
def test_import_round_trip_gives_the_same_table(occluded, table, tmp_path, fmt):
    exported = export_labels(occluded, fmt, tmp_path / ("labels.xml" if fmt == "cvat" else "labels.json"))
    summary = import_labels([str(exported)], fmt, str(tmp_path / "imported"))
    assert summary["model_id"].startswith(f"import:{fmt}:")
    back = pd.read_parquet(tmp_path / "imported").sort_values(["frame", "object_id"]).reset_index(drop=True)
    assert list(back.columns) == list(table.columns)
    assert len(back) == len(table) and set(back.video_id) == set(table.video_id)
    # Encord names objects by objectHash: the same objects, one to one, under those names.
    ids = dict(zip(table.object_id, table.object_id))
    if fmt == "encord":
        pairs = {(a, b) for a, b in zip(*(t.sort_values(["frame", "class_name"]).object_id for t in (table, back)))}
        ids = dict(pairs)
        assert len(ids) == len(pairs) == len(set(ids.values())) == 3
    merged = table.assign(object_id=table.object_id.map(ids)).merge(back, on=["frame", "object_id"], suffixes=("", "_b"))
    assert len(merged) == len(table)
    assert (merged.class_name == merged.class_name_b).all() and (merged.feature_hash == merged.feature_hash_b).all()
    assert np.allclose(merged.confidence, merged.confidence_b, atol=1e-5)
    if fmt != "encord":
        assert (merged.track_id == merged.track_id_b).all()
    assert min(_iou(a, b) for a, b in zip(merged.geometry, merged.geometry_b)) >= 0.99
    # A user's next steps take it like any label run's output: compare, and train's data.
    assert compare_tables(back, table)["IDF1"] == pytest.approx(1.0)
    from segflow.flows.train import split_data
    from segflow.training.data import SegDataset

    assert split_data([str(tmp_path / "imported")]) == ([], [tmp_path / "imported"])
    data = SegDataset.from_parquet([tmp_path / "imported"], ("circle", "square", "ring"))
    assert len(data) == table.frame.nunique() and data.instance_count() == len(table)


def test_compare_of_a_table_with_itself_and_with_a_worse_one(occluded, table, capsys, caplog):
    assert main(["compare", str(occluded), str(occluded)]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["segm_AP"] == pytest.approx(1.0) and out["segm_AP50"] == pytest.approx(1.0) and out["IDF1"] == 1.0
    assert "Average Precision" not in caplog.text  # pycocotools' summary is not logged as the run's INFO lines
    # One track's id changes halfway and one instance is dropped: IDF1 and AP go down.
    worse = table.copy()
    ring = worse.class_name == "ring"
    worse.loc[ring & (worse.frame >= 6), "object_id"] = "switched"
    worse = worse.drop(worse[worse.class_name == "square"].index[:1])
    got = compare_tables(worse, table)
    n_ref, n_lab, ring_late = len(table), len(worse), int((ring & (table.frame >= 6)).sum())
    assert got["IDF1"] == pytest.approx(2 * (n_lab - ring_late) / (n_ref + n_lab))
    assert got["segm_AP"] < 1.0


def test_import_and_compare_refuse_bad_input_with_one_line(occluded, tmp_path, capsys):
    bad = tmp_path / "bad.xml"
    bad.write_text("{not xml")
    cases = [
        (["import", str(bad), "--format", "yolo", "--out", str(tmp_path / "a")], "unknown import format"),
        (["import", str(tmp_path / "missing.json"), "--format", "coco", "--out", str(tmp_path / "a")], "no such file"),
        (["import", str(bad), "--format", "cvat", "--out", str(tmp_path / "a")], "not valid XML"),
        (["import", str(bad), "--format", "cvat", "--out", str(occluded)], "already holds a label table"),
        (["compare", str(tmp_path), str(occluded)], "LABELS"),
        (["compare", str(occluded), str(tmp_path / "nosuch")], "REFERENCE"),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "a").exists()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Two images (a ring with a hole, a square in two parts), labeled as an image dataset."""
    from PIL import Image

    from segflow.cli import run_label

    root = tmp_path_factory.mktemp("images")
    for k, frame in enumerate(clips.render(n_frames=2, seed=3)):
        Image.fromarray(frame).save(root / f"still{k}.png")
    run_label([str(root / "still0.png"), str(root / "still1.png")], str(root / "labels"), model="test-color")
    return root / "labels"


@pytest.mark.review_tools
def test_cvat_images_read_back_by_datumaro(images, tmp_path):
    dm = review_tool("datumaro")
    table = pd.read_parquet(images)
    path = export_labels(images, "cvat", tmp_path / "annotations.xml")
    # CVAT's own layout ('CVAT for images 1.1' zip): images/<name in the XML> beside it, where datumaro looks
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == ["still0.png", "still1.png"]
    ds = dm.Dataset.import_from(str(path), "cvat")
    names = ds.categories()[dm.AnnotationType.label]
    assert len(ds) == 2
    for item in ds:
        assert item.media.has_data and item.media.data.shape[:2] == (240, 320)  # the image, found by datumaro
        rows = table[table.source.str.endswith(item.id + ".png")]
        objects: dict[str, np.ndarray] = {}
        for ann in item.annotations:
            drawn = ann.image.astype(bool) if hasattr(ann, "image") else geometry_mask(
                shapely.Polygon(np.reshape(ann.points, (-1, 2))), 240, 320)
            oid = ann.attributes["object_id"]
            assert names[ann.label].name == rows[rows.object_id == oid].class_name.iloc[0]
            objects[oid] = objects.get(oid, np.zeros_like(drawn)) | drawn  # parts of one object: one group
        assert set(objects) == set(rows.object_id)
        for row in rows.itertuples():
            assert _iou(row.geometry, objects[row.object_id]) >= 0.99


@pytest.mark.review_tools
def test_label_studio_tasks_decode_to_the_same_masks(images, tmp_path):
    review_tool("label_studio_sdk")
    from label_studio_sdk.converter import brush
    from label_studio_sdk.converter.converter import Converter
    from pycocotools import mask as mask_utils

    from segflow.storage.exports.common import load_label_set
    from segflow.storage.exports.label_studio import label_config

    table = pd.read_parquet(images)
    assert main(["export", str(images), "--format", "label-studio", "--to", str(tmp_path / "ls.json"),
                 "--image-prefix", "https://data.example/img/"]) == 0
    tasks = json.loads((tmp_path / "ls.json").read_text())
    assert len(tasks) == 2 and {t["data"]["image"] for t in tasks} == {"https://data.example/img/still0.png",
                                                                    "https://data.example/img/still1.png"}
    kinds = set()
    for task in tasks:
        (pred,) = task["predictions"]
        rows = table[table.source == task["data"]["source"]]
        assert pred["model_version"] == rows.model_id.iloc[0]
        assert pred["score"] == pytest.approx(rows.confidence.mean(), abs=1e-5)
        assert task["data"]["review_priority"] == pytest.approx(rows.review_priority.max(), abs=1e-5)
        drawn: dict[str, np.ndarray] = {}
        for r in pred["result"]:
            kinds.add(r["type"])
            if r["type"] == "brushlabels":  # decoded by Label Studio's own RLE decoder
                m = brush.decode_rle(r["value"]["rle"]).reshape(240, 320, 4)[..., 3] > 0
            else:
                pts = (np.array(r["value"]["points"]) / 100 * (320, 240)).ravel().tolist()
                m = mask_utils.decode(mask_utils.frPyObjects([pts], 240, 320))[..., 0].astype(bool)
            oid = r["id"].split("_p")[0]
            drawn[oid] = drawn.get(oid, np.zeros((240, 320), bool)) | m
        assert set(drawn) == set(rows.object_id)
        for row in rows.itertuples():
            assert _iou(row.geometry, drawn[row.object_id]) >= 0.99
    assert kinds == {"polygonlabels", "brushlabels"}
    # A reviewer accepts the predictions: Label Studio's converter takes them as annotations.
    accepted = [{"id": k + 1, "data": t["data"], "annotations": [{"id": k + 1, "result": t["predictions"][0]["result"]}]}
                for k, t in enumerate(tasks)]
    (tmp_path / "accepted.json").write_text(json.dumps(accepted))
    converter = Converter(label_config(load_label_set(images)), str(tmp_path), download_resources=False)
    converter.convert_to_coco(str(tmp_path / "accepted.json"), str(tmp_path / "coco"), is_dir=False)
    coco = json.loads((tmp_path / "coco" / "result.json").read_text())
    polygons = [r for t in tasks for r in t["predictions"][0]["result"] if r["type"] == "polygonlabels"]
    assert len(coco["images"]) == 2 and len(coco["annotations"]) == len(polygons)
    for ann, r in zip(coco["annotations"], polygons):
        ours = mask_utils.decode(mask_utils.frPyObjects(
            [(np.array(r["value"]["points"]) / 100 * (320, 240)).ravel().tolist()], 240, 320))[..., 0]
        theirs = mask_utils.decode(mask_utils.frPyObjects(ann["segmentation"], 240, 320)).max(axis=-1)
        assert (ours == theirs).mean() > 0.999


def test_review_lists_the_broken_track_first(occluded, table, capsys):
    circle = table[table.class_name == "circle"].set_index("frame")
    assert circle.loc[GONE[0] - 1, "review_priority"] > 0 and circle.loc[GONE[-1] + 1, "review_priority"] > 0
    assert main(["review", str(occluded), "--top", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    first = result["objects"][0]
    assert first["object_id"] == circle.object_id.iloc[0] and "track broken 1x" in first["reasons"]
    assert len(result["objects"]) == 2 and len(result["frames"]) == 2
    back = GONE[-1] + 1  # the circle is back: the count changes and its row is weak
    assert result["frames"][0]["frame"] in (GONE[0] - 1, back)
    assert any(f["frame"] == back and "object count 2 -> 3" in f["reasons"] for f in result["frames"])
    assert main(["review", str(occluded), "--top", "0"]) == 2


def test_label_studio_tasks_of_a_video_name_the_frames_it_writes(occluded, table, tmp_path):
    path = export_labels(occluded, "label-studio", tmp_path / "ls" / "tasks.json")
    tasks = json.loads(path.read_text())
    assert [t["data"]["frame"] for t in tasks] == list(range(12))
    for t in tasks:
        image = Path(t["data"]["image"])
        assert image.is_file() and image.parent.parent == tmp_path / "ls"  # <export folder>/<video>/<frame>.jpg
        ids = {r["id"].split("_p")[0] for r in t["predictions"][0]["result"]}
        assert ids == set(table[table.frame == t["data"]["frame"]].object_id)
    coco = json.loads(export_labels(occluded, "coco", tmp_path / "coco.json", frames=False).read_text())
    assert {a["review_priority"] for a in coco["annotations"]} == {round(float(v), 6) for v in table.review_priority}


def test_compare_matches_an_import_made_away_from_the_video_by_file_name(occluded, table, tmp_path, capsys):
    xml = export_labels(occluded, "cvat", tmp_path / "review.xml")
    source = table.source.iloc[0]
    xml.write_text(xml.read_text().replace(f"<source>{source}</source>", f"<source>{Path(source).name}</source>"))
    import_labels([str(xml)], "cvat", str(tmp_path / "reviewed"))  # as a file CVAT wrote: the name only
    assert set(pd.read_parquet(tmp_path / "reviewed").video_id) != set(table.video_id)
    assert main(["compare", str(occluded), str(tmp_path / "reviewed")]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["segm_AP"] == pytest.approx(1.0) and out["IDF1"] == pytest.approx(1.0)


def test_a_label_run_publishes_its_review_queue(occluded, table):
    """The label run itself publishes what `segflow review` lists: the Prefect table artifacts."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        # paged: in a whole-suite run, every label run before this one published these keys
        # (the API answers 200 at a time; this fixture's run may be far down the list)
        found, offset = [], 0
        while page := client.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["review-queue", "review-queue-frames"])), offset=offset, limit=200):
            found += page
            offset += len(page)
        mine = {a.key: json.loads(a.data) for a in found if a.description.endswith(f"to review in {occluded}")
                and client.read_flow(client.read_flow_run(a.flow_run_id).flow_id).name == "label"}
    objects, frames = mine["review-queue"], mine["review-queue-frames"]
    circle = table[table.class_name == "circle"].object_id.iloc[0]
    assert len(objects) == 3 and objects[0]["object_id"] == circle and "track broken 1x" in objects[0]["reasons"]
    assert any(f["frame"] == GONE[-1] + 1 and "object count 2 -> 3" in f["reasons"] for f in frames)


def test_encord_rows_carry_the_review_priority_encords_sdk_reads(occluded, table, tmp_path, capsys):
    """--review-priority: each instance's priority is its object's dynamic attribute answer on
    its frame, declared by the ontology written beside; Encord's SDK reads them back."""
    from datetime import datetime, timezone

    import encord.ontology
    import encord.orm.ontology
    from encord.objects import LabelRowV2
    from encord.objects.ontology_structure import OntologyStructure
    from encord.orm.storage import CustomerProvidedVideoMetadata

    assert main(["export", str(occluded), "--format", "encord", "--to", str(tmp_path / "rows.json"),
                 "--review-priority"]) == 0
    (row,) = json.loads((tmp_path / "rows.json").read_text())
    structure = OntologyStructure.from_dict(json.loads((tmp_path / "rows.ontology.json").read_text()))
    now = datetime.now(timezone.utc)
    ontology = encord.ontology.Ontology(encord.orm.ontology.Ontology(
        title="segflow", structure=structure, ontology_hash="segflow", created_at=now, last_edited_at=now), None)
    unit = next(iter(row["data_units"].values()))
    parsed = LabelRowV2.from_media_metadata(ontology, CustomerProvidedVideoMetadata(
        fps=10.0, duration=1.2, width=320, height=240, fileSize=1, mimeType="video/mp4"))
    parsed.from_labels_dict(row)
    read = {}
    for inst in parsed.get_object_instances():
        (attr,) = inst.ontology_item.attributes
        for answer in inst.get_answer(attr):
            for rng in answer.ranges:
                for frame in range(rng.start, rng.end + 1):
                    read[(inst.object_hash, frame)] = answer.answer
    objects = {(int(f), o["objectHash"]): o for f, objs in unit["labels"].items() for o in objs["objects"]}
    assert len(read) == len(objects) == len(table)
    by_hash = {}
    for r in table.itertuples():  # the table's object -> its objectHash, by frame and class
        (h,) = [h for (f, h), o in objects.items() if f == r.frame and o["name"].lower() == r.class_name]
        by_hash.setdefault(r.object_id, h)
        assert read[(h, r.frame)] == pytest.approx(r.review_priority, abs=1e-6)
    assert len(set(by_hash.values())) == 3 and max(read.values()) > 0
    # Off by default (a project ontology without the attribute takes the rows); other formats refuse the flag.
    assert main(["export", str(occluded), "--format", "encord", "--to", str(tmp_path / "plain.json")]) == 0
    assert json.loads((tmp_path / "plain.json").read_text())[0]["object_actions"] == {}
    assert not (tmp_path / "plain.ontology.json").exists()
    capsys.readouterr()
    assert main(["export", str(occluded), "--format", "coco", "--to", str(tmp_path / "c.json"), "--review-priority"]) == 2
    assert "only for --format encord" in capsys.readouterr().err and not (tmp_path / "c.json").exists()


def test_review_of_images_names_each_image_file(images, capsys, caplog):
    # An image's video_id is its content hash: the listing names the file too, and Prefect's
    # "Still processing items" notice at exit is not printed.
    import logging

    from segflow.faults import quiet_prefect_failures

    assert main(["review", str(images), "--top", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [ln for ln in lines if ln.startswith("  ")]
    assert rows and all(("still0.png" in ln) != ("still1.png" in ln) for ln in rows), lines
    assert main(["review", str(images), "--top", "5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {Path(r["source"]).name for r in result["objects"]} <= {"still0.png", "still1.png"}
    quiet_prefect_failures()
    with caplog.at_level(logging.WARNING):
        logging.getLogger("EventsWorker").warning("Still processing items: 2 items remaining...")
        logging.getLogger("EventsWorker").warning("something else")
    assert "Still processing" not in caplog.text and "something else" in caplog.text


def test_compare_names_the_inputs_the_reference_lacks_and_can_leave_them_out(occluded, tmp_path, capsys):
    """A reference of one video of two (one reviewed and imported): the default scores the
    other video's labels as false positives (README's rule) and says so in one line;
    --reference-inputs-only scores only the reviewed video (1.0 against itself)."""
    from segflow.cli import run_label

    other = clips.write_mp4(tmp_path / "other.mp4", clips.render(n_frames=12, seed=3))
    run_label([str(occluded.parent / "occluded.mp4"), str(other)], str(tmp_path / "both"), model="test-color",
              frames_per_range=6)
    assert main(["compare", str(tmp_path / "both"), str(occluded)]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out.strip().splitlines()[-1])
    assert out["inputs_not_in_reference"] == [str(other.resolve())] and out["segm_AP"] < 0.9
    note = [line for line in captured.err.splitlines() if "reference has no frames" in line]
    assert note == ["segflow: note: the reference has no frames of 1 of the 2 inputs of LABELS (other.mp4): "
                    "their labels count as false positives; --reference-inputs-only leaves them out"]
    assert main(["compare", str(tmp_path / "both"), str(occluded), "--reference-inputs-only"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["segm_AP"] == pytest.approx(1.0) and out["IDF1"] == pytest.approx(1.0)
    assert out["label_instances"] == out["reference_instances"]
    # A reference covering every input: no note, nothing listed.
    assert main(["compare", str(occluded), str(occluded)]) == 0
    captured = capsys.readouterr()
    assert "reference has no frames" not in captured.err
    assert json.loads(captured.out.strip().splitlines()[-1])["inputs_not_in_reference"] == []


def test_label_studio_tasks_of_images_name_the_links_the_export_writes(images, tmp_path):
    """Images: each task's data.image is the link written beside the tasks file (as a video's
    frames are); with --no-frames nothing is written and it is the input's own path."""
    table = pd.read_parquet(images)
    assert main(["export", str(images), "--format", "label-studio", "--to", str(tmp_path / "ls") + "/"]) == 0
    tasks = json.loads(next((tmp_path / "ls").glob("*.json")).read_text())
    assert len(tasks) == 2
    for t in tasks:
        image = Path(t["data"]["image"])
        assert image.parent == tmp_path / "ls" and image.is_file()
        assert image.read_bytes() == Path(t["data"]["source"]).read_bytes() and t["data"]["source"] in set(table.source)
    assert main(["export", str(images), "--format", "label-studio", "--to", str(tmp_path / "bare" / "t.json"),
                 "--no-frames"]) == 0
    tasks = json.loads((tmp_path / "bare" / "t.json").read_text())
    assert {t["data"]["image"] for t in tasks} == set(table.source)
    assert sorted(p.name for p in (tmp_path / "bare").iterdir()) == ["t.json"]
