"""A round trip through a review tool keeps the labeled frames that have no instances.

The clip: the test clip with its first, a middle and its last frame left empty (background
only), so the label run labels 8 frames and 5 of them hold instances. Exporting to
COCO/Encord/CVAT and importing back must give the same 8 labeled frames (the negatives
COCO evaluation and training count), not only the frames with instances.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from segflow.storage.exports import export_labels
from segflow.storage.exports.common import labeled_inputs
from segflow.storage.imports import import_labels
from tests import clips

EMPTY = (0, 4, 7)  # frames without any object
N_FRAMES = 8


@pytest.fixture(scope="module")
def labeled(tmp_path_factory):
    """The clip labeled: 8 labeled frames, instances on all but EMPTY."""
    from segflow.cli import run_label

    frames = clips.render(n_frames=N_FRAMES)
    background = clips.render(n_frames=1, seed=1, occluder=False)[0]
    background[...] = np.median(background, axis=(0, 1)).astype(np.uint8)  # plain gray: nothing to segment
    for t in EMPTY:
        frames[t] = background.copy()
    root = tmp_path_factory.mktemp("emptyframes")
    clip = clips.write_mp4(root / "emptyframes.mp4", frames)
    # a switch to a blank frame is a shot cut: tracks end there, and pieces shorter than the
    # default minimum track length would be dropped; every piece is kept here
    run_label([str(clip)], str(root / "labels"), model="test-color", min_track_length=1)
    return root / "labels"


def _frames(root) -> dict[str, tuple[int, ...]]:
    return {item.video_id: item.frames for item in labeled_inputs(root)}


def test_the_clip_has_labeled_frames_without_instances(labeled):
    (frames,) = _frames(labeled).values()
    table = pd.read_parquet(labeled)
    assert frames == tuple(range(N_FRAMES))
    assert sorted(set(table.frame)) == [t for t in range(N_FRAMES) if t not in EMPTY]


@pytest.mark.parametrize("fmt", ["coco", "encord", "cvat"])
def test_a_round_trip_keeps_the_labeled_frames_without_instances(labeled, tmp_path, fmt):
    exported = export_labels(labeled, fmt, tmp_path / ("labels.xml" if fmt == "cvat" else "labels.json"))
    summary = import_labels([str(exported)], fmt, str(tmp_path / "back"))
    (before,), (after,) = _frames(labeled).values(), _frames(tmp_path / "back").values()
    assert after == before == tuple(range(N_FRAMES))
    assert [i["frames"] for i in summary["inputs"]] == [N_FRAMES]
    assert len(pd.read_parquet(tmp_path / "back")) == len(pd.read_parquet(labeled))


def test_encord_rows_with_empty_frames_load_in_encords_sdk(labeled, tmp_path):
    """The empty frames are `{"objects": [], "classifications": []}` entries (as the SDK
    writes a frame it keeps without objects); the SDK takes them and the instances."""
    (row,) = json.loads(export_labels(labeled, "encord", tmp_path / "rows.json").read_text())
    (unit,) = row["data_units"].values()
    assert sorted(map(int, unit["labels"])) == list(range(N_FRAMES))
    assert all(unit["labels"][str(t)] == {"objects": [], "classifications": []} for t in EMPTY)
    parsed = _sdk_row(labeled, row)
    table = pd.read_parquet(labeled)
    assert parsed.number_of_frames == N_FRAMES
    assert sum(len(i.get_annotations()) for i in parsed.get_object_instances()) == len(table)
    frames = {a.frame for i in parsed.get_object_instances() for a in i.get_annotations()}
    assert frames == set(table.frame)


def test_a_row_resaved_by_encords_sdk_keeps_only_frames_with_objects(labeled, tmp_path):
    """Encord's SDK writes a video's `labels` from its object instances' frames alone
    (`LabelRowV2._to_encord_labels`: classifications carry ranges, not frame entries), so
    no shape of segflow's rows keeps an empty labeled frame through `to_encord_dict` /
    `save`: the README says so (Exports). Fails, and the README is to change, once the SDK keeps them."""
    from segflow.storage.imports import import_labels

    (row,) = json.loads(export_labels(labeled, "encord", tmp_path / "rows.json").read_text())
    resaved = _sdk_row(labeled, row).to_encord_dict()
    (unit,) = resaved["data_units"].values()
    with_objects = sorted(set(range(N_FRAMES)) - set(EMPTY))
    assert sorted(map(int, unit["labels"])) == with_objects
    (tmp_path / "resaved.json").write_text(json.dumps([resaved], default=str))
    import_labels([str(tmp_path / "resaved.json")], "encord", str(tmp_path / "back"))
    (frames,) = _frames(tmp_path / "back").values()
    # frames 0 and 7 are gone; 4 comes back as labeled only because a table file covers its range whole
    assert frames == tuple(range(with_objects[0], with_objects[-1] + 1)) and set(EMPTY) - set(frames) == {0, 7}
    assert len(pd.read_parquet(tmp_path / "back")) == len(pd.read_parquet(labeled))


def _sdk_row(labeled, row: dict):
    """`row` read by Encord's SDK (offline: an ontology and the video's metadata given)."""
    import encord.ontology
    import encord.orm.ontology
    from encord.objects import LabelRowV2
    from encord.objects.ontology_structure import OntologyStructure
    from encord.orm.storage import CustomerProvidedVideoMetadata

    from segflow.storage.exports.common import load_label_set
    from segflow.storage.exports.encord import encord_ontology

    (unit,) = row["data_units"].values()
    now = datetime.now(timezone.utc)
    structure = OntologyStructure.from_dict(encord_ontology(load_label_set(labeled)))
    ontology = encord.ontology.Ontology(encord.orm.ontology.Ontology(
        title="segflow", structure=structure, ontology_hash="segflow", created_at=now, last_edited_at=now), None)
    fps = unit["data_fps"]
    parsed = LabelRowV2.from_media_metadata(ontology, CustomerProvidedVideoMetadata(
        fps=fps, duration=N_FRAMES / fps, width=320, height=240, fileSize=1, mimeType="video/mp4"))
    parsed.from_labels_dict(row)
    return parsed
