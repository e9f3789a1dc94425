"""Exports of the label table: COCO (pycocotools round trip), Encord label rows, YouTube-VIS."""

from __future__ import annotations

import contextlib
import io
import json
from collections import defaultdict

import numpy as np
import pytest
import shapely
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from segflow.cli import main
from segflow.errors import SegflowError
from segflow.storage.exports import export_labels
from segflow.storage.exports.encord import object_hashes

ENCORD_OBJECT_FIELDS = {
    "objectHash", "featureHash", "name", "value", "color", "shape", "confidence",
    "manualAnnotation", "createdAt", "createdBy", "polygon", "polygons",
}


@pytest.fixture(scope="module")
def coco_path(labeled, tmp_path_factory):
    return export_labels(labeled, "coco", tmp_path_factory.mktemp("coco") / "coco.json")


@pytest.fixture
def coco(coco_path) -> COCO:
    # Fresh per test: COCOeval rewrites the ground truth's segmentations in place.
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(coco_path))


def _evaluate(gt: COCO, dt: COCO, iou_type: str) -> float:
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


def test_coco_loads_and_scores_ap_1_against_itself(coco):
    assert len(coco.getImgIds()) == 12 and len(coco.getAnnIds()) == 36
    assert sorted(c["name"] for c in coco.loadCats(coco.getCatIds())) == ["circle", "ring", "square"]
    image = coco.loadImgs(1)[0]
    assert (image["width"], image["height"], image["frame_index"]) == (320, 240, 0)
    assert image["file_name"] == "shapes/000000.jpg" and len(image["video_id"]) == 16
    for ann in coco.loadAnns(coco.getAnnIds()):
        assert ann["iscrowd"] == 0 and isinstance(ann["track_id"], int) and ann["object_id"].endswith(f"t{ann['track_id']:05d}")
    detections = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": coco.annToRLE(a),
         "bbox": a["bbox"], "score": a["score"]}
        for a in coco.loadAnns(coco.getAnnIds())
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        dt = coco.loadRes(detections)
    assert _evaluate(coco, dt, "segm") == pytest.approx(1.0)
    assert _evaluate(coco, dt, "bbox") == pytest.approx(1.0)


def test_coco_ring_keeps_its_hole_with_its_area(coco, table):
    ring_cat = coco.getCatIds(catNms=["ring"])[0]
    rings = coco.loadAnns(coco.getAnnIds(catIds=[ring_cat]))
    assert len(rings) == 12
    polygons = {(r.frame, r.object_id): shapely.from_wkb(r.geometry) for r in table[table.class_name == "ring"].itertuples()}
    for ann in rings:
        assert isinstance(ann["segmentation"], dict)  # a hole cannot be a COCO polygon list
        image = coco.loadImgs(ann["image_id"])[0]
        poly = polygons[(image["frame_index"], ann["object_id"])]
        mask = coco.annToMask(ann).astype(bool)
        assert abs(mask.sum() - poly.area) / poly.area < 0.01
        cx, cy = poly.interiors[0].centroid.coords[0]
        assert not mask[int(cy), int(cx)]  # the hole is still a hole
        assert mask.sum() == pytest.approx(ann["area"], rel=0.01)
    others = coco.loadAnns(coco.getAnnIds(catIds=coco.getCatIds(catNms=["circle", "square"])))
    assert all(isinstance(a["segmentation"], list) for a in others)
    squares = [a for a in others if a["category_id"] == coco.getCatIds(catNms=["square"])[0]]
    assert all(len(a["segmentation"]) == 2 for a in squares)  # both parts of the occluded square


@pytest.fixture(scope="module")
def encord_rows(labeled, tmp_path_factory):
    path = export_labels(labeled, "encord", tmp_path_factory.mktemp("encord") / "rows.json")
    return json.loads(path.read_text())


def _in_unit(values) -> bool:
    return all(0.0 <= v <= 1.0 for v in values)


def _pixel_area(part: list[list[float]], width: int, height: int) -> float:
    shell, *holes = (np.reshape(ring, (-1, 2)) * (width, height) for ring in part)
    return shapely.Polygon(shell, holes).area


def test_encord_label_row_structure(encord_rows, table):
    assert isinstance(encord_rows, list) and len(encord_rows) == 1
    row = encord_rows[0]
    assert row["data_type"] == "video" and row["data_title"] == "shapes.mp4"
    assert isinstance(row["object_answers"], dict) and row["classification_answers"] == {}
    (data_hash, unit), = row["data_units"].items()
    assert data_hash == row["data_hash"] == unit["data_hash"]
    assert (unit["width"], unit["height"]) == (320, 240)
    assert sorted(unit["labels"], key=int) == [str(f) for f in range(12)]
    hashes_by_class = defaultdict(set)
    for frame, label in unit["labels"].items():
        assert label["classifications"] == [] and len(label["objects"]) == 3
        for obj in label["objects"]:
            assert ENCORD_OBJECT_FIELDS <= obj.keys()
            assert obj["shape"] == "polygon" and obj["manualAnnotation"] is False
            assert obj["value"] == obj["name"].lower().replace(" ", "_")
            assert obj["color"].startswith("#") and obj["createdAt"].endswith("UTC") and obj["createdBy"]
            assert len(obj["objectHash"]) == 8 and obj["objectHash"] in row["object_answers"]
            expected = table[(table.frame == int(frame)) & (table.class_name == obj["name"])].iloc[0]
            assert obj["featureHash"] == expected.feature_hash
            assert obj["confidence"] == pytest.approx(float(expected.confidence))
            points = [obj["polygon"][str(i)] for i in range(len(obj["polygon"]))]
            assert len(points) >= 3 and _in_unit([p["x"] for p in points] + [p["y"] for p in points])
            flat = [v for p in points for v in (p["x"], p["y"])]
            assert obj["polygons"][0][0] == flat  # `polygon` is the outer ring of the largest part
            for part in obj["polygons"]:
                for ring in part:
                    assert len(ring) % 2 == 0 and len(ring) >= 6 and _in_unit(ring)
            geom = shapely.from_wkb(expected.geometry)
            shapes = {"ring": [2], "square": [1, 1], "circle": [1]}[obj["name"]]
            assert [len(part) for part in obj["polygons"]] == shapes  # holes and parts kept
            # Denormalized, the parts have the table polygon's area.
            area = sum(_pixel_area(part, 320, 240) for part in obj["polygons"])
            assert area == pytest.approx(geom.area, rel=1e-3)
            hashes_by_class[obj["name"]].add(obj["objectHash"])
    assert all(len(h) == 1 for h in hashes_by_class.values())  # one objectHash along each track
    assert len(set().union(*hashes_by_class.values())) == 3


def test_object_hashes_are_deterministic_and_unique():
    ids = [f"vid-f{f:06d}-{k:03d}" for f in range(2000) for k in range(3)]
    first, again = object_hashes(ids), object_hashes(list(reversed(ids)))
    assert first == again and len(set(first.values())) == len(ids)
    assert all(len(h) == 8 for h in first.values())


def test_youtube_vis_structure(labeled, table, tmp_path):
    doc = json.loads(export_labels(labeled, "ytvis", tmp_path).read_text())
    assert (tmp_path / "youtube_vis.json").is_file()  # a folder --to gets a default name
    (video,) = doc["videos"]
    assert (video["length"], video["width"], video["height"]) == (12, 320, 240)
    assert video["file_names"] == [f"shapes/{f:06d}.jpg" for f in range(12)]
    cats = {c["id"]: c["name"] for c in doc["categories"]}
    assert len(doc["annotations"]) == 3  # one per track
    for ann in doc["annotations"]:
        assert ann["video_id"] == video["id"] and cats[ann["category_id"]] in {"circle", "ring", "square"}
        assert len(ann["segmentations"]) == len(ann["areas"]) == len(ann["bboxes"]) == 12
        track = table[table.object_id == ann["object_id"]].sort_values("frame")
        for rle, area, geom in zip(ann["segmentations"], ann["areas"], track.geometry):
            assert rle["size"] == [240, 320]
            decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
            assert decoded.sum() == area
            assert area == pytest.approx(shapely.from_wkb(geom).area, rel=0.02)


def test_export_refuses_bad_input_with_one_line(labeled, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SegflowError, match="no label table"):
        export_labels(empty, "coco", tmp_path / "x.json")
    with pytest.raises(SegflowError, match=r"allowed: coco, encord, youtube-vis"):
        export_labels(labeled, "pascal", tmp_path / "x.json")
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    with pytest.raises(SegflowError, match="is a file, not a folder"):
        export_labels(labeled, "coco", blocker / "x.json")
    assert not (tmp_path / "x.json").exists()
    assert main(["export", str(empty), "--format", "coco", "--to", str(tmp_path / "y.json")]) == 2


def test_export_command_runs_the_flow(labeled, tmp_path, capsys):
    assert main(["export", str(labeled), "--format", "encord", "--to", str(tmp_path)]) == 0
    written = tmp_path / "encord_label_rows.json"
    assert str(written) in capsys.readouterr().out
    assert json.loads(written.read_text())[0]["data_type"] == "video"


@pytest.mark.parametrize("fmt, written", [("cvat", "shapes.xml"), ("coco", "coco.json"),
                                           ("youtube-vis", "youtube_vis.json")])
def test_to_ending_in_a_slash_is_a_folder_created(labeled, tmp_path, fmt, written, capsys):
    # README: `segflow export OUT --format cvat --to review/` -> review/<video>.xml, not a file `review`.
    target = tmp_path / "t2" / "newdir"
    assert main(["export", str(labeled), "--format", fmt, "--to", f"{target}/"]) == 0
    assert target.is_dir() and (target / written).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t2"]
    assert sorted(p.name for p in (tmp_path / "t2").iterdir()) == ["newdir"]  # frames inside it too
    if fmt != "cvat":
        assert (target / "shapes" / "000000.jpg").is_file()


def test_categories_follow_the_recorded_ontology_else_the_table(table):
    from segflow.storage.exports.common import resolve_categories

    hashes = dict(table[["class_name", "feature_hash"]].drop_duplicates().itertuples(index=False, name=None))
    recorded = {"objects": [
        {"class": c, "name": f"My {c.title()}", "featureHash": hashes[c], "color": "#123456"} for c in ("ring", "circle", "square")
    ]}
    cats = resolve_categories(table, {"last_run": {"ontology": recorded}})
    assert [(c.id, c.class_name, c.name, c.color) for c in cats][:2] == [(1, "ring", "My Ring", "#123456"), (2, "circle", "My Circle", "#123456")]
    recorded["objects"][0]["featureHash"] = "deadbeef"  # not the ontology these labels were made with
    fallback = resolve_categories(table, {"last_run": {"ontology": recorded}})
    assert [(c.class_name, c.name, c.feature_hash) for c in fallback] == [(c, c, hashes[c]) for c in sorted(hashes)]


def test_object_store_targets_name_a_file_or_a_folder():
    from segflow.storage.exports.target import names_folder, split_target

    assert split_target("s3://b/run/coco.json") == ("s3://b/run", "coco.json")
    assert split_target("s3://my.bucket/coco.json") == ("s3://my.bucket", "coco.json")
    for folder in ("s3://b/run", "s3://b/run/", "s3://my.bucket", "s3://my.bucket/", "s3://b/v1.2/"):
        assert split_target(folder) == (folder.rstrip("/"), None), folder


def test_local_targets_follow_the_object_store_rule(labeled, tmp_path):
    # One rule for `--to`: `review` is a folder whether it is local or s3://b/review.
    from segflow.storage.exports.target import names_folder

    (tmp_path / "made").mkdir()
    (tmp_path / "notes").write_text("")
    assert names_folder(tmp_path / "review") and names_folder(f"{tmp_path}/review.v2/") and names_folder(tmp_path / "made")
    assert not names_folder(tmp_path / "coco.json") and not names_folder(tmp_path / "notes")
    assert main(["export", str(labeled), "--format", "coco", "--no-frames", "--to", str(tmp_path / "review")]) == 0
    assert (tmp_path / "review" / "coco.json").is_file()


def test_export_refused_for_a_changed_input_is_one_line(clip, tmp_path):
    # A refusal inside the export flow: one line on stderr, as `label`'s, not Prefect's traceback too.
    import os
    import shutil
    import subprocess
    import sys

    from prefect.settings import PREFECT_API_URL

    from segflow.cli import run_label

    video = tmp_path / "bikes.mp4"
    shutil.copy(clip, video)
    run_label([str(video)], str(tmp_path / "labels"), model="test-color", frames_per_range=5)
    with video.open("ab") as f:
        f.write(b"changed")
    code = "import sys\nfrom segflow.cli import main\nsys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    done = subprocess.run([sys.executable, "-c", code, "export", str(tmp_path / "labels"), "--format", "coco",
                           "--to", str(tmp_path / "coco") + "/"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=600)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("segflow: error: --frames: ") and "changed since" in lines[0], lines
    assert not (tmp_path / "coco").exists()


def test_readme_label_studio_config_snippet_runs_on_the_public_labelset(labeled, tmp_path, monkeypatch, capsys):
    # README (Review): label_config(segflow.open("labels/")) - it took only the export's internal LabelSet.
    import textwrap
    import xml.etree.ElementTree as ET

    from segflow.storage.exports.common import load_label_set
    from segflow.storage.exports.label_studio import label_config
    from tests.test_api import readme_blocks

    code = next(textwrap.dedent(c) for lang, c in readme_blocks("## Review: into the labeling tools and back")
                if lang == "python" and "label_config" in c)
    (tmp_path / "labels").symlink_to(labeled)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md (Label Studio config)", "exec"), {})
    printed = capsys.readouterr().out.strip()
    assert printed == label_config(load_label_set(labeled)) == label_config(str(labeled))
    root = ET.fromstring(printed)
    assert sorted(x.get("value") for x in root.iter("Label")) == ["circle", "circle", "ring", "ring", "square", "square"]


def test_import_prints_the_counts_of_what_it_read(labeled, tmp_path, capsys):
    coco = export_labels(labeled, "coco", tmp_path / "c" / "coco.json", frames=False)
    assert main(["import", str(coco), "--format", "coco", "--out", str(tmp_path / "imp")]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"imported 1 input(s): 12 frames, 36 instances, 3 objects -> {tmp_path / 'imp'}  model: import:coco:coco.json"
