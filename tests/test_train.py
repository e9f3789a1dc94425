"""Training, data loading and checkpoint tests (tiny from-scratch models, CPU, < 60 s)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from segflow.errors import SegflowError
from segflow.models.arch import ARCHS, build_model
from segflow.models.checkpoint import CheckpointMeta, file_digest, load_checkpoint, read_meta, save_checkpoint
from segflow.training.data import SegDataset, collate, wkb_mask
from segflow.training.loop import lr_at, train

CLASSES = ("circle", "square")
SIZE = 128
TINY = {"min_size": SIZE, "max_size": SIZE}  # keep the tiny frames at native size


def _draw(seed: int) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """A 128x128 frame with one circle and one square at seeded places; (image, [(cat, mask)])."""
    rng = np.random.default_rng(seed)
    img = np.full((SIZE, SIZE, 3), rng.integers(20, 60), np.uint8)
    cx, cy, r = int(rng.integers(25, 45)), int(rng.integers(25, 100)), int(rng.integers(12, 20))
    circle = np.zeros((SIZE, SIZE), np.uint8)
    cv2.circle(circle, (cx, cy), r, 1, -1)
    x, y, s = int(rng.integers(65, 85)), int(rng.integers(10, 80)), int(rng.integers(20, 35))
    square = np.zeros((SIZE, SIZE), np.uint8)
    square[y: y + s, x: x + s] = 1
    img[circle > 0] = (230, 60, 60)
    img[square > 0] = (60, 200, 240)
    return img, [(1, circle), (2, square)]


def _polygon(mask: np.ndarray) -> list[list[float]]:
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return [c.reshape(-1).astype(float).tolist() for c in contours]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Train on one intra-op thread: these tensors are tiny, and on a shared 2-core box a
    second OpenMP thread makes every op wait at a barrier (measured 10x slower under load)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def tiny_coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 PNG frames with a circle (polygon) and a square (RLE) each, as *.coco.json."""
    from pycocotools import mask as mask_utils

    root = tmp_path_factory.mktemp("tiny")
    images, anns = [], []
    for i in range(4):
        img, inst = _draw(i)
        cv2.imwrite(str(root / f"f{i}.png"), img[:, :, ::-1])
        images.append({"id": i + 1, "file_name": f"f{i}.png", "width": SIZE, "height": SIZE})
        for cat, m in inst:
            if cat == 1:
                segm = _polygon(m)
            else:
                segm = mask_utils.encode(np.asfortranarray(m))
                segm["counts"] = segm["counts"].decode()
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cat, "segmentation": segm,
                         "area": int(m.sum()), "bbox": [0, 0, 1, 1], "iscrowd": 0})
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]
    path = root / "tiny.coco.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


@pytest.fixture(scope="module")
def trained(tiny_coco: Path) -> tuple[torch.nn.Module, list[float]]:
    """maskrcnn_small trained 40 steps on the tiny set with a fixed seed."""
    torch.manual_seed(0)
    ds = SegDataset.from_coco([tiny_coco], augment=True)
    model = build_model("maskrcnn_small", len(CLASSES) + 1, **TINY)
    losses = train(model, ds, steps=40, batch_size=2, lr=2e-3, device="cpu", log_every=0, seed=0, warmup=5)
    return model.eval(), losses


def test_dataset_targets_from_coco_polygons_and_rle(tiny_coco: Path) -> None:
    ds = SegDataset.from_coco([tiny_coco.parent])  # a folder of *.coco.json works too
    assert ds.classes == CLASSES and len(ds) == 4
    image, target = ds[0]
    _, inst = _draw(0)
    assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    assert target["labels"].tolist() == [1, 2]
    square = inst[1][1]
    assert torch.equal(target["masks"][1], torch.from_numpy(square))  # RLE decodes exactly
    ys, xs = np.nonzero(square)
    assert target["boxes"][1].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    iou = (target["masks"][0].numpy() & inst[0][1]).sum() / (target["masks"][0].numpy() | inst[0][1]).sum()
    assert iou > 0.9  # polygon rasterised back


def test_dataset_reads_video_frames(tmp_path: Path) -> None:
    import imageio_ffmpeg

    frames = [_draw(i)[0] for i in range(3)]
    video = tmp_path / "clip.mp4"
    writer = imageio_ffmpeg.write_frames(str(video), (SIZE, SIZE), fps=10, quality=10, macro_block_size=16,
                                         ffmpeg_log_level="error")
    writer.send(None)
    for f in frames:
        writer.send(np.ascontiguousarray(f))
    writer.close()
    _, inst = _draw(2)
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(inst[1][1]))
    rle["counts"] = rle["counts"].decode()
    coco = {"images": [{"id": 7, "file_name": "clip.mp4", "frame_index": 2, "width": SIZE, "height": SIZE}],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 2, "segmentation": rle, "iscrowd": 0}],
            "categories": [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}]}
    (tmp_path / "clip.coco.json").write_text(json.dumps(coco))
    ds = SegDataset.from_coco([tmp_path / "clip.coco.json"])
    image, target = ds[0]
    assert abs(image.mul(255).permute(1, 2, 0).numpy() - frames[2]).mean() < 6  # frame 2, not 0
    assert target["labels"].tolist() == [2]


def test_parquet_labels_rasterise_with_holes(tmp_path: Path) -> None:
    import pandas as pd
    import shapely
    from shapely.geometry import Polygon

    img, _ = _draw(0)
    cv2.imwrite(str(tmp_path / "a.png"), img[:, :, ::-1])
    ring = Polygon([(10, 10), (60, 10), (60, 60), (10, 60)], [[(25, 25), (45, 25), (45, 45), (25, 45)]])
    df = pd.DataFrame({"source": [str(tmp_path / "a.png")] * 2, "frame": [0, 0], "class_name": ["square", "blob"],
                       "geometry": [shapely.to_wkb(ring), shapely.to_wkb(Polygon([(0, 0), (5, 0), (5, 5)]))],
                       "width": [SIZE] * 2, "height": [SIZE] * 2})
    df.to_parquet(tmp_path / "labels.parquet")
    ds = SegDataset.from_parquet([tmp_path / "labels.parquet"], CLASSES)
    _, target = ds[0]
    assert target["labels"].tolist() == [2]  # the unknown class is dropped
    m = target["masks"][0]
    assert m[15, 15] == 1 and m[35, 35] == 0 and m[70, 70] == 0
    assert int(m.sum()) == ring.area  # pixel (r, c) = [c, c + 1] x [r, r + 1], as the polygonizer writes
    assert wkb_mask(shapely.to_wkb(ring), SIZE, SIZE).sum() == m.sum()


def _as_segflow_parquet(coco_path: Path, out: Path, coarseness: float) -> Path:
    """The COCO set's masks as segflow writes them: polygonized (segflow.ops.polygon) into a
    Parquet table with the columns training reads."""
    import pandas as pd
    import shapely

    from segflow.ops.polygon import mask_to_polygon, tolerance_px
    from segflow.training.data import _coco_mask

    coco = json.loads(coco_path.read_text())
    images = {im["id"]: im for im in coco["images"]}
    names = {c["id"]: c["name"] for c in coco["categories"]}
    rows = []
    for ann in coco["annotations"]:
        im = images[ann["image_id"]]
        mask = _coco_mask(ann["segmentation"], im["height"], im["width"])
        geom = mask_to_polygon(mask.astype(bool), tolerance_px(coarseness, im["width"], im["height"]))
        rows.append({"source": str(coco_path.parent / im["file_name"]), "frame": 0, "class_name": names[ann["category_id"]],
                     "geometry": shapely.to_wkb(geom), "width": im["width"], "height": im["height"]})
    pd.DataFrame(rows).to_parquet(out)
    return out


def _predicted_area(model: torch.nn.Module, ds: SegDataset) -> int:
    """Pixels of the model's masks (score >= 0.5, mask >= 0.5) over the dataset's frames."""
    total = 0
    with torch.inference_mode():
        for i in range(len(ds)):
            out = model([ds[i][0]])[0]
            total += int((out["masks"][out["scores"] >= 0.5, 0] >= 0.5).sum())
    return total


def test_a_model_trained_on_its_own_parquet_labels_keeps_the_mask_area(tiny_coco: Path, trained, tmp_path: Path) -> None:
    """Labels that go through segflow's Parquet and back into training teach the mask area
    of the COCO masks they came from: at coarseness 0 the targets are the very same pixels
    (and a model trained on them predicts the same area as one trained on COCO, within 2%);
    at the default coarseness the targets' area is within 2% of the masks'."""
    coco_ds = SegDataset.from_coco([tiny_coco])
    exact = _as_segflow_parquet(tiny_coco, tmp_path / "exact.parquet", 0.0)
    default = SegDataset.from_parquet([_as_segflow_parquet(tiny_coco, tmp_path / "default.parquet", 0.005)], CLASSES)
    coco_area = default_area = 0
    for i, (_, target) in enumerate(SegDataset.from_parquet([exact], CLASSES)):
        assert torch.equal(target["masks"], coco_ds[i][1]["masks"])
        coco_area += int(target["masks"].sum())
        default_area += int(default[i][1]["masks"].sum())
    assert abs(default_area - coco_area) / coco_area < 0.02, (default_area, coco_area)
    torch.manual_seed(0)
    model = build_model("maskrcnn_small", len(CLASSES) + 1, **TINY)
    train(model, SegDataset.from_parquet([exact], CLASSES, augment=True), steps=40, batch_size=2, lr=2e-3,
          device="cpu", log_every=0, seed=0, warmup=5)
    from_coco, from_parquet = _predicted_area(trained[0], coco_ds), _predicted_area(model.eval(), coco_ds)
    assert from_coco > 0 and abs(from_parquet - from_coco) / from_coco < 0.02, (from_parquet, from_coco)


def test_loss_falls(trained: tuple[torch.nn.Module, list[float]]) -> None:
    _, losses = trained
    assert len(losses) == 40 and all(np.isfinite(losses))
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.6 * first, (first, last)


def test_training_is_deterministic(tiny_coco: Path) -> None:
    def run() -> list[float]:
        ds = SegDataset.from_coco([tiny_coco], augment=True)
        torch.manual_seed(1)
        model = build_model("maskrcnn_small", 3, **TINY)
        return train(model, ds, steps=3, batch_size=2, lr=1e-3, device="cpu", log_every=0, seed=1)

    assert run() == run()


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_checkpoint_roundtrip_identical_outputs(trained, tiny_coco: Path, tmp_path: Path, suffix: str) -> None:
    model, _ = trained
    meta = CheckpointMeta("maskrcnn_small", CLASSES, dict(TINY), extra={"steps": 40})
    path = tmp_path / f"m{suffix}"
    digest = save_checkpoint(path, model, meta)
    assert digest == file_digest(path) and len(digest) == 64
    assert read_meta(path) == meta
    loaded, meta2 = load_checkpoint(path)
    assert meta2 == meta and not loaded.training
    image, _ = SegDataset.from_coco([tiny_coco])[1]
    with torch.inference_mode():
        a, b = model([image])[0], loaded([image])[0]
    assert len(a["boxes"]) > 0
    for key in ("boxes", "labels", "scores", "masks"):
        assert torch.equal(a[key], b[key]), key


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")  # the crafted file uses protocol 4
def test_code_carrying_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):  # unpickling would call Path.touch(marker)
            return (Path.touch, (marker,))

    bad = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "segflow_meta": Evil()}, bad)
    assert not marker.exists()
    with pytest.raises(SegflowError, match="evil.pt"):
        load_checkpoint(bad)
    with pytest.raises(SegflowError):
        read_meta(bad)
    # a plain pickle file (not even a torch zip) is refused the same way
    raw = tmp_path / "raw.pth"
    raw.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(SegflowError, match="raw.pth"):
        load_checkpoint(raw)
    assert not marker.exists()


def test_class_count_mismatch_is_refused(tmp_path: Path) -> None:
    model = build_model("maskrcnn_small", 4, **TINY)  # 3 classes
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, CheckpointMeta("maskrcnn_small", CLASSES, dict(TINY)))  # says 2
    with pytest.raises(SegflowError, match=r"m\.safetensors.*2 classes"):
        load_checkpoint(path)


def test_corrupt_or_incomplete_files_are_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    good = tmp_path / "good.safetensors"
    save_checkpoint(good, build_model("maskrcnn_small", 3, **TINY), CheckpointMeta("maskrcnn_small", CLASSES, dict(TINY)))
    cases = {
        "garbage.safetensors": b"\x00not a checkpoint" * 50,
        "truncated.safetensors": good.read_bytes()[: good.stat().st_size // 2],
        "garbage.pt": b"PK\x03\x04 broken zip",
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SegflowError, match=name.replace(".", r"\.")):
            load_checkpoint(tmp_path / name)
    save_file({"w": torch.zeros(2)}, str(tmp_path / "nometa.safetensors"))
    with pytest.raises(SegflowError, match="no segflow metadata"):
        read_meta(tmp_path / "nometa.safetensors")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "arch.safetensors"),
              metadata={"segflow": json.dumps({"arch": "yolo", "classes": ["a"], "arch_kwargs": {}})})
    with pytest.raises(SegflowError, match="unknown architecture 'yolo'"):
        load_checkpoint(tmp_path / "arch.safetensors")
    with pytest.raises(SegflowError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    model = build_model("maskrcnn_small", 3, **TINY)
    meta = CheckpointMeta("maskrcnn_small", CLASSES, dict(TINY))
    save_checkpoint(tmp_path / "a.safetensors", model, meta)
    with pytest.raises(TypeError):  # metadata that is not JSON-able fails before writing
        save_checkpoint(tmp_path / "b.safetensors", model, CheckpointMeta("maskrcnn_small", CLASSES, {"x": object()}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors"]


def test_build_model_archs() -> None:
    with pytest.raises(SegflowError, match="maskrcnn_small"):
        build_model("resnet9000", 3)
    assert set(ARCHS) >= {"maskrcnn_r50_fpn", "maskrcnn_r50_fpn_v2", "maskrcnn_small"}
    r50 = build_model("maskrcnn_r50_fpn", 5)
    assert r50.roi_heads.box_predictor.cls_score.out_features == 5


def test_lr_schedule_warms_up_then_decays() -> None:
    lrs = [lr_at(s, 100, 1.0, 10) for s in range(100)]
    assert lrs[0] < 0.2 and abs(lrs[9] - 1.0) < 1e-9 and lrs[-1] < 0.1
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))


def test_cli_refuses_bad_values(tiny_coco: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from segflow.training.cli import train_cmd

    runner = CliRunner()
    base = ["--data", str(tiny_coco), "--out", str(tmp_path / "m.safetensors")]
    for extra, needle in [(["--steps", "0"], "--steps"), (["--arch", "yolo"], "--arch"), (["--lr", "-1"], "--lr"),
                          (["--device", "tpu"], "--device"), (["--crop", "12"], "--crop"),
                          (["--data", str(tmp_path / "nope")], "nope"), (["--init", str(tmp_path / "x.pt")], "--init")]:
        result = runner.invoke(train_cmd, base + extra)
        assert isinstance(result.exception, SegflowError) and needle in str(result.exception), extra
    assert not (tmp_path / "m.safetensors").exists()


def test_collate_keeps_lists(tiny_coco: Path) -> None:
    ds = SegDataset.from_coco([tiny_coco])
    images, targets = collate([ds[0], ds[1]])
    assert len(images) == 2 and set(targets[0]) == {"boxes", "labels", "masks"}


def test_train_flow_writes_checkpoint_and_record(tiny_coco: Path, tmp_path: Path) -> None:
    from segflow.flows.train import train_flow

    out = tmp_path / "run" / "tiny.safetensors"
    digest = train_flow(data=[str(tiny_coco)], out=str(out), steps=3, batch_size=2, lr=1e-3, device="cpu",
                        seed=0, crop=[96, 96], checkpoint_every=2, arch_kwargs=dict(TINY), command="test")
    assert digest == file_digest(out)
    assert (tmp_path / "run" / "tiny.step000002.safetensors").is_file()
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["sha256"] == digest and record["classes"] == list(CLASSES)
    assert record["extra"]["steps"] == 3 and record["extra"]["command"] == "test" and record["extra"]["crop"] == [96, 96]
    model, meta = load_checkpoint(out)
    assert meta.classes == CLASSES and meta.arch_kwargs["min_size"] == SIZE
    assert model.transform._skip_resize is False  # training-only switch is not left on


def test_evaluate_checkpoint_scores_ground_truth(trained, tiny_coco: Path, tmp_path: Path) -> None:
    from segflow.training.evaluate import evaluate_checkpoint

    model, _ = trained
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, model, CheckpointMeta("maskrcnn_small", CLASSES, dict(TINY)))
    metrics = evaluate_checkpoint(path, tiny_coco)
    assert {"segm_AP", "segm_AP50", "bbox_AP"} <= set(metrics)
    assert 0.0 <= metrics["segm_AP"] <= metrics["segm_AP50"] <= 1.0
