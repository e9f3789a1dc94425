"""Synthetic shapes generator: determinism, ground-truth semantics, mp4/COCO/YouTube-VIS files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import ndimage

from segflow.errors import SegflowError
from segflow.synth import CLASSES, MIN_VISIBLE_AREA, SynthPaths, generate, write_clip
from segflow.synth.cli import synth

SIZE = (128, 160)  # (H, W), multiples of 16: small frames keep the tests fast
EIGHT = np.ones((3, 3), bool)  # 8-connectivity: diagonal touching is still one part


def _frames(seed: int, n: int, **kw):
    return list(generate(seed, n, SIZE, **kw))


def test_classes_are_stable():
    assert CLASSES[:3] == ("circle", "square", "ring")
    assert len(set(CLASSES)) == len(CLASSES)


def test_same_seed_same_frames_and_truth():
    a, b = _frames(7, 12), _frames(7, 12)
    for fa, fb in zip(a, b, strict=True):
        assert fa.index == fb.index
        assert fa.image.tobytes() == fb.image.tobytes()
        assert [(i.track_id, i.class_name) for i in fa.instances] == [(i.track_id, i.class_name) for i in fb.instances]
        for ia, ib in zip(fa.instances, fb.instances):
            assert np.array_equal(ia.mask, ib.mask)
    # Frame i does not depend on the video length.
    short = _frames(7, 4)
    assert all(s.image.tobytes() == f.image.tobytes() for s, f in zip(short, a))
    # Another seed is another video.
    assert _frames(8, 1)[0].image.tobytes() != a[0].image.tobytes()


def test_frame_and_instance_contract():
    h, w = SIZE
    for f in _frames(3, 15):
        assert f.image.dtype == np.uint8 and f.image.shape == (h, w, 3)
        ids = [i.track_id for i in f.instances]
        assert ids == sorted(set(ids))
        union = np.zeros((h, w), np.int32)
        for inst in f.instances:
            assert inst.class_name in CLASSES
            assert inst.mask.dtype == bool and inst.mask.shape == (h, w)
            assert inst.mask.sum() >= MIN_VISIBLE_AREA
            union += inst.mask
        assert union.max() <= 1  # visible parts only: masks never overlap


def test_ring_mask_has_a_real_hole():
    found = False
    for seed in range(5):
        for f in generate(seed, 10, SIZE, classes=["ring"], occluders=0):
            for inst in f.instances:
                filled = ndimage.binary_fill_holes(inst.mask)
                if filled.sum() > inst.mask.sum():
                    found = True
    assert found


def test_occluder_splits_an_instance_into_parts():
    # One convex shape: only an occluder bar can cut its visible part in two.
    split = [
        (f.index, i.track_id)
        for f in generate(0, 30, SIZE, classes=["circle"], occluders=2)
        for i in f.instances
        if ndimage.label(i.mask, EIGHT)[1] >= 2
    ]
    assert split
    # Same in a busy scene.
    assert any(
        ndimage.label(i.mask, EIGHT)[1] >= 2 for f in generate(0, 30, SIZE, n_objects=4, occluders=2) for i in f.instances
    )


def test_tracks_leave_and_come_back_with_the_same_id():
    def has_gap(seed: int) -> bool:
        seen: dict[int, list[int]] = {}
        for f in generate(seed, 40, SIZE):
            for i in f.instances:
                seen.setdefault(i.track_id, []).append(f.index)
        return any(np.diff(v).max() > 1 for v in seen.values() if len(v) > 1)

    assert any(has_gap(s) for s in range(4))


def test_bad_parameters_are_one_line_errors(tmp_path):
    with pytest.raises(SegflowError, match="frames"):
        generate(0, 0, SIZE)
    with pytest.raises(SegflowError, match="height"):
        generate(0, 5, (32, 160))
    with pytest.raises(SegflowError, match="multiple of 16"):
        write_clip(tmp_path, 0, 5, (120, 160))
    with pytest.raises(SegflowError, match="classes"):
        generate(0, 5, SIZE, classes=["hexagon"])
    assert list(tmp_path.iterdir()) == []


N_FRAMES = 12


@pytest.fixture(scope="module")
def synth_clip(tmp_path_factory) -> SynthPaths:
    return write_clip(tmp_path_factory.mktemp("synth"), 5, N_FRAMES, SIZE, occluders=1)


def test_write_clip_files(synth_clip: SynthPaths):
    assert synth_clip.video.name == "synth_0005.mp4"
    assert synth_clip.coco.name == "synth_0005.coco.json" and synth_clip.ytvis.name == "synth_0005.ytvis.json"
    # Atomic writes leave no temporary files behind.
    assert sorted(p.name for p in synth_clip.video.parent.iterdir()) == sorted(p.name for p in (synth_clip.video, synth_clip.coco, synth_clip.ytvis))


def test_mp4_has_every_frame(synth_clip: SynthPaths):
    import decord

    vr = decord.VideoReader(str(synth_clip.video))
    assert len(vr) == N_FRAMES
    decoded = vr.get_batch(list(range(N_FRAMES))).asnumpy()
    assert decoded.shape == (N_FRAMES, *SIZE, 3)
    # Decoded frame i is generated frame i (lossy codec: close, not equal).
    for f in generate(5, N_FRAMES, SIZE, occluders=1):
        assert np.abs(decoded[f.index].astype(np.int16) - f.image).mean() < 10


def test_coco_loads_and_round_trips_masks(synth_clip: SynthPaths):
    from pycocotools.coco import COCO

    coco = COCO(str(synth_clip.coco))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
    by_frame = {img["frame_index"]: img for img in coco.dataset["images"]}
    assert sorted(by_frame) == list(range(N_FRAMES))
    for f in generate(5, N_FRAMES, SIZE, occluders=1):
        img = by_frame[f.index]
        assert img["file_name"] == synth_clip.video.name and img["video"] == "synth_0005"
        assert (img["height"], img["width"]) == SIZE
        anns = sorted(coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]])), key=lambda a: a["track_id"])
        assert [a["track_id"] for a in anns] == [i.track_id for i in f.instances]
        for a, inst in zip(anns, f.instances):
            assert coco.cats[a["category_id"]]["name"] == inst.class_name
            assert np.array_equal(coco.annToMask(a).astype(bool), inst.mask)
            assert a["area"] == inst.mask.sum() and a["iscrowd"] == 0
            ys, xs = np.nonzero(inst.mask)
            assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]


def test_youtube_vis_structure(synth_clip: SynthPaths):
    from pycocotools import mask as mask_utils

    data = json.loads(Path(synth_clip.ytvis).read_text())
    (video,) = data["videos"]
    assert video["length"] == N_FRAMES and (video["height"], video["width"]) == SIZE
    assert video["file_names"] == [f"synth_0005.mp4#{i}" for i in range(N_FRAMES)]
    assert [c["id"] for c in data["categories"]] == list(range(1, len(CLASSES) + 1))
    tracks = {a["track_id"]: a for a in data["annotations"]}
    assert len(tracks) == len(data["annotations"])
    for a in data["annotations"]:
        assert a["video_id"] == video["id"] and a["iscrowd"] == 0
        assert len(a["segmentations"]) == len(a["areas"]) == len(a["bboxes"]) == N_FRAMES
    for f in generate(5, N_FRAMES, SIZE, occluders=1):
        visible = {i.track_id: i for i in f.instances}
        for tid, a in tracks.items():
            seg = a["segmentations"][f.index]
            if tid not in visible:
                assert seg is None and a["areas"][f.index] is None
                continue
            rle = {"size": seg["size"], "counts": seg["counts"].encode()}
            assert np.array_equal(mask_utils.decode(rle).astype(bool), visible[tid].mask)
            assert data["categories"][a["category_id"] - 1]["name"] == visible[tid].class_name


def test_cli_writes_count_clips(tmp_path):
    res = CliRunner().invoke(synth, ["--seed", "2", "--out", str(tmp_path), "--frames", "3",
                                     "--width", "160", "--height", "128", "--count", "2"])
    assert res.exit_code == 0, res.output
    printed = res.output.split()
    assert len(printed) == 6 and all(Path(p).exists() for p in printed)
    assert {Path(p).name for p in printed} >= {"synth_0002.mp4", "synth_0003.ytvis.json"}


@pytest.mark.parametrize("args", [["--frames", "0"], ["--width", "100"], ["--height", "48"], ["--count", "0"]])
def test_cli_refuses_bad_values(tmp_path, args):
    res = CliRunner().invoke(synth, ["--seed", "1", "--out", str(tmp_path / "o"), *args])
    assert isinstance(res.exception, SegflowError)
    assert "\n" not in str(res.exception)
    assert not (tmp_path / "o").exists()
