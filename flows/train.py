"""Prefect flow: train a Mask R-CNN on COCO (or segflow Parquet) labels and save a checkpoint.

Reads like the script it wraps::

    data    = load_data(files)             # frames + instance targets, decoded once
    model   = init_model(arch, classes)    # from scratch, COCO weights (r50) or --init
    losses  = fit(model, data, ...)        # AdamW, warmup + cosine, clipping
    digest  = save(model, out, record)     # .safetensors + <out>.json training record
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import torch
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from segflow.errors import SegflowError
from segflow.models.arch import ARCHS, SMALL_DEFAULTS, build_model, count_parameters
from segflow.models.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from segflow.training.data import SegDataset, coco_classes, find_coco_files
from segflow.models.devices import resolve_device
from segflow.settings import default_of
from segflow.training import DEFAULT_ARCH, DEFAULT_BATCH_SIZE, DEFAULT_LR, DEFAULT_STEPS
from segflow.training.loop import train

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth")


# --------------------------------------------------------------------------- helpers
def checkpoint_path(out: str | Path) -> Path:
    """``out`` as a checkpoint file: a checkpoint suffix is kept, else ``out/model.safetensors``."""
    p = Path(out)
    return p if p.suffix.lower() in CHECKPOINT_SUFFIXES else p / "model.safetensors"


def split_data(data: list[str]) -> tuple[list[Path], list[Path]]:
    """Sort ``--data`` entries into COCO JSON files and segflow Parquet tables."""
    if not data:
        raise SegflowError("--data: give at least one COCO JSON file, folder or Parquet table")
    coco, parquet = [], []
    for d in map(Path, data):
        table = d.is_dir() and (any(d.glob("*.parquet")) or any(d.glob("[!.]*/*.parquet")))  # a run's OUT too
        if d.suffix == ".parquet" or (table and not any(d.rglob("*.coco.json"))):
            if not d.exists():
                raise SegflowError(f"--data {d}: no such file or folder")
            parquet.append(d)
        else:
            coco += find_coco_files([d])
    return coco, parquet


def resolved_arch_kwargs(arch: str, arch_kwargs: dict | None) -> dict:
    """Arch kwargs with the small model's defaults written out, so the checkpoint rebuilds
    the same graph even if the defaults change later."""
    kw = dict(arch_kwargs or {})
    return {**SMALL_DEFAULTS, **kw} if arch == "maskrcnn_small" else kw


def _coco_weights(arch: str):
    from torchvision.models.detection import MaskRCNN_ResNet50_FPN_V2_Weights, MaskRCNN_ResNet50_FPN_Weights

    return {"maskrcnn_r50_fpn": MaskRCNN_ResNet50_FPN_Weights.COCO_V1,
            "maskrcnn_r50_fpn_v2": MaskRCNN_ResNet50_FPN_V2_Weights.COCO_V1}.get(arch)


def _load_matching(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> tuple[int, list[str]]:
    """Copy every tensor whose name and shape match; return (copied, skipped names)."""
    own = model.state_dict()
    fit = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(fit, strict=False)
    return len(fit), sorted(set(own) - set(fit))


# --------------------------------------------------------------------------- tasks
@task(cache_policy=NO_CACHE)
def load_data(coco: list[Path], parquet: list[Path], classes: list[str], stride: int,
              scale_to: tuple[int, int], crop: tuple[int, int] | None) -> SegDataset:
    """Build the training set (augmented, scaled as the model sees frames) and decode it once."""
    logger = get_run_logger()
    opts = {"augment": True, "scale_to": scale_to, "crop": crop}
    parts = []
    if coco:
        parts.append(SegDataset.from_coco(coco, classes, stride=stride, **opts))
    if parquet:
        parts.append(SegDataset.from_parquet(parquet, classes, **opts))
    ds = parts[0]
    for extra in parts[1:]:
        ds.samples += extra.samples
    t0 = time.perf_counter()
    ds.preload()
    logger.info(
        "training data: %d frames, %d instances, classes %s (decoded in %.1f s)",
        len(ds), ds.instance_count(), list(ds.classes), time.perf_counter() - t0,
    )
    return ds


def data_classes(coco: list[Path], parquet: list[Path]) -> list[str]:
    """Class names of the data: COCO categories by id, else the Parquet class names sorted."""
    if coco:
        return coco_classes(coco)
    import pyarrow.parquet as pq

    return sorted({c for p in parquet for c in pq.read_table(p, columns=["class_name"]).column(0).to_pylist()})


@task(cache_policy=NO_CACHE)
def init_model(arch: str, classes: tuple[str, ...], arch_kwargs: dict, init: str | None) -> torch.nn.Module:
    """A fresh model; weights from ``init`` (a segflow checkpoint) or, for r50, COCO when cached."""
    logger = get_run_logger()
    model = build_model(arch, len(classes) + 1, **arch_kwargs)
    if init:
        src, meta = load_checkpoint(init)
        n, skipped = _load_matching(model, src.state_dict())
        logger.info("init from %s (%s, classes %s): %d tensors copied, %d re-initialised %s",
                    init, meta.arch, list(meta.classes), n, len(skipped), skipped[:6])
    elif (weights := _coco_weights(arch)) is not None:
        state = _fetch_coco_state(weights, logger)
        if state is not None:
            n, skipped = _load_matching(model, state)
            logger.info("init %s from COCO weights: %d tensors copied; new predictors for %d classes (%s)",
                        arch, n, len(classes), ", ".join(skipped))
    logger.info("model %s: %.2f M parameters", arch, count_parameters(model) / 1e6)
    return model


def _fetch_coco_state(weights: Any, logger: Any) -> dict | None:
    """torchvision's COCO state dict via torch.hub's cache, or None (logged) when offline."""
    cached = Path(torch.hub.get_dir()) / "checkpoints" / weights.url.rsplit("/", 1)[-1]
    if os.environ.get("SEGFLOW_OFFLINE") == "1" and not cached.is_file():
        logger.warning("COCO weights %s not in torch hub cache (%s) and SEGFLOW_OFFLINE=1; training from scratch",
                       weights, torch.hub.get_dir())
        return None
    try:
        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(20)  # offline boxes should fail fast, not hang
        try:
            return weights.get_state_dict(progress=False)
        finally:
            socket.setdefaulttimeout(old)
    except Exception as exc:
        logger.warning("COCO weights %s not in torch hub cache (%s) and not downloadable (%s); training from scratch",
                       weights, torch.hub.get_dir(), str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__)
        return None


@task(cache_policy=NO_CACHE)
def fit(model: torch.nn.Module, data: SegDataset, steps: int, batch_size: int, lr: float, device: str, seed: int,
        checkpoint_every: int, out: Path, meta: CheckpointMeta) -> list[float]:
    """Run the training loop, saving ``<out>.stepNNNNNN`` checkpoints along the way."""
    logger = get_run_logger()

    def snapshot(step: int, m: torch.nn.Module) -> None:
        if step == steps:
            return  # the final weights are written by `save`
        p = out.with_name(f"{out.stem}.step{step:06d}{out.suffix}")
        save_checkpoint(p, m, meta)
        logger.info("intermediate checkpoint %s", p)

    return train(model, data, steps, batch_size, lr, device, log_every=max(1, min(50, steps // 20)), seed=seed,
                 on_checkpoint=snapshot, checkpoint_every=checkpoint_every, logger=logger)


@task(cache_policy=NO_CACHE)
def save(model: torch.nn.Module, out: Path, meta: CheckpointMeta) -> str:
    """Write the checkpoint and, next to it, ``<stem>.json`` with the training record."""
    digest = save_checkpoint(out, model.cpu().eval(), meta)
    record = {**meta.to_dict(), "file": out.name, "sha256": digest, "bytes": out.stat().st_size}
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    get_run_logger().info("saved %s (%.1f MB, sha256 %s)", out, out.stat().st_size / 1e6, digest[:16])
    return digest


# --------------------------------------------------------------------------- flow
def validate(arch: str, steps: int, batch_size: int, lr: float, device: str, seed: int, checkpoint_every: int) -> None:
    """Refuse bad settings before any work, one line each."""
    if arch not in ARCHS:
        raise SegflowError(f"--arch {arch!r}: choose one of {', '.join(ARCHS)}")
    if not isinstance(steps, int) or steps < 1:
        raise SegflowError(f"--steps {steps!r}: must be an integer >= 1")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise SegflowError(f"--batch-size {batch_size!r}: must be an integer >= 1")
    if not isinstance(lr, (int, float)) or not 0 < lr <= 1:
        raise SegflowError(f"--lr {lr!r}: must be in (0, 1]")
    if not isinstance(seed, int) or seed < 0:
        raise SegflowError(f"--seed {seed!r}: must be an integer >= 0")
    if not isinstance(checkpoint_every, int) or checkpoint_every < 0:
        raise SegflowError(f"--checkpoint-every {checkpoint_every!r}: must be an integer >= 0")
    resolve_device(device)


def parse_crop(crop: Any) -> tuple[int, int] | None:
    """``[h, w]``, ``"HxW"`` or None -> (h, w) or None; sides must be ints >= 32."""
    if crop is None or crop == "" or crop == []:
        return None
    try:
        hw = [int(v) for v in (crop.lower().split("x") if isinstance(crop, str) else crop)]
    except (TypeError, ValueError):
        hw = []
    if len(hw) != 2 or min(hw) < 32:
        raise SegflowError(f"--crop {crop!r}: give HxW with both sides >= 32, e.g. 320x384")
    return hw[0], hw[1]


@flow(name="segflow-train", log_prints=True)
def train_flow(
    data: list[str],
    out: str,
    arch: str = DEFAULT_ARCH,
    steps: int = DEFAULT_STEPS,
    batch_size: int = DEFAULT_BATCH_SIZE,
    lr: float = DEFAULT_LR,
    device: str = default_of("device"),
    seed: int = 0,
    init: str | None = None,
    classes: list[str] | None = None,
    frame_stride: int = 1,
    crop: list[int] | None = None,
    checkpoint_every: int = 0,
    arch_kwargs: dict | None = None,
    command: str | None = None,
) -> str:
    """Train ``arch`` on ``data`` and write the checkpoint to ``out``; return its SHA-256.

    ``data``: COCO JSON files / folders of ``*.coco.json`` / segflow Parquet tables.
    ``out``: a ``.safetensors``/``.pt`` path, or a folder (``model.safetensors`` inside).
    ``crop``: ``[h, w]`` random training crops at inference scale (faster CPU steps).
    ``command`` is recorded in the training record (the CLI passes its own argv).
    """
    validate(arch, steps, batch_size, lr, device, seed, checkpoint_every)
    coco, parquet = split_data(data)
    ckpt = checkpoint_path(out)
    kwargs = resolved_arch_kwargs(arch, arch_kwargs)
    torch.manual_seed(seed)  # model init is part of the seeded run

    classes = list(classes) if classes else data_classes(coco, parquet)
    if not classes:
        raise SegflowError("--data: the training data names no classes")
    crop_hw = parse_crop(crop)

    model = init_model(arch, tuple(classes), kwargs, init)
    # Frames are scaled in the dataset exactly as the model's transform would scale them
    # at inference, so the transform's own (training-time, random-size) resize is off.
    scale_to = (int(model.transform.min_size[0]), int(model.transform.max_size))
    model.transform._skip_resize = True
    dataset = load_data(coco, parquet, classes, frame_stride, scale_to, crop_hw)

    started = time.time()
    record: dict[str, Any] = {
        "data": [str(p) for p in coco + parquet], "frames": len(dataset), "instances": dataset.instance_count(),
        "frame_stride": frame_stride, "crop": list(crop_hw) if crop_hw else None, "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
        "device": str(resolve_device(device)), "init": init, "command": command,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    meta = CheckpointMeta(arch=arch, classes=tuple(dataset.classes), arch_kwargs=kwargs, extra=record)
    losses = fit(model, dataset, steps, batch_size, lr, device, seed, checkpoint_every, ckpt, meta)

    k = max(1, min(50, len(losses) // 10))
    record |= {
        "wall_s": round(time.time() - started, 1),
        "loss_first": round(sum(losses[:k]) / k, 4),
        "loss_last": round(sum(losses[-k:]) / k, 4),
    }
    meta = CheckpointMeta(arch=arch, classes=tuple(dataset.classes), arch_kwargs=kwargs, extra=record)
    model.transform._skip_resize = False
    return save(model, ckpt, meta)
