"""The training loop: plain functions, no framework.

``train`` runs a fixed number of optimizer steps over a detection dataset with AdamW
(or SGD), linear warmup then cosine decay, gradient clipping and deterministic seeding.
"""

from __future__ import annotations

import logging
import math
import random
import time
from typing import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from segflow.errors import SegflowError
from segflow.models.devices import resolve_device
from segflow.training.data import collate

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch Generator for data order."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def lr_at(step: int, steps: int, lr: float, warmup: int, final_frac: float = 0.05) -> float:
    """Learning rate at ``step`` (0-based): linear warmup, then cosine down to ``final_frac * lr``."""
    if warmup > 0 and step < warmup:
        return lr * (0.001 + 0.999 * (step + 1) / warmup)
    t = (step - warmup) / max(1, steps - warmup)
    return lr * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def make_optimizer(model: torch.nn.Module, name: str, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW or SGD over trainable parameters; no weight decay on norms and biases."""
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)
    raise SegflowError(f"optimizer {name!r}: choose adamw or sgd")


def _batches(dataset: Dataset, batch_size: int, gen: torch.Generator) -> Iterator[tuple[list, list]]:
    """Endless shuffled batches; each pass is a new permutation drawn from ``gen``."""
    while True:
        sampler = RandomSampler(dataset, generator=gen)
        # num_workers=0: on a 2-core box the model uses both cores; workers only contend.
        loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate, drop_last=False)
        yield from loader


def train(
    model: torch.nn.Module,
    dataset: Dataset,
    steps: int,
    batch_size: int = 4,
    lr: float = 1e-3,
    device: str = "cpu",
    log_every: int = 20,
    seed: int = 0,
    *,
    optimizer: str = "adamw",
    weight_decay: float = 1e-4,
    warmup: int | None = None,
    clip_norm: float = 10.0,
    on_checkpoint: Callable[[int, torch.nn.Module], None] | None = None,
    checkpoint_every: int = 0,
    logger: logging.Logger | logging.LoggerAdapter | None = None,
) -> list[float]:
    """Train ``model`` for ``steps`` optimizer steps; return the total loss of each step.

    ``warmup`` defaults to min(200, steps // 10) steps. Every ``checkpoint_every`` steps
    (and after the last) ``on_checkpoint(step, model)`` is called so a long run always
    leaves a usable checkpoint. The model is left in train mode on ``device``.
    """
    if steps < 1 or batch_size < 1 or not lr > 0:
        raise SegflowError(f"steps, batch size and lr must be positive (got {steps}, {batch_size}, {lr})")
    logger = logger or log
    dev = torch.device(resolve_device(device))
    gen = seed_everything(seed)
    warmup = min(200, steps // 10) if warmup is None else warmup
    model.to(dev).train()
    opt = make_optimizer(model, optimizer, lr, weight_decay)
    batches = _batches(dataset, batch_size, gen)
    losses: list[float] = []
    t0 = time.perf_counter()
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, warmup)
        images, targets = next(batches)
        images = [im.to(dev, non_blocking=True) for im in images]
        targets = [{k: v.to(dev, non_blocking=True) for k, v in t.items()} for t in targets]
        parts = model(images, targets)
        loss = sum(parts.values())
        if not torch.isfinite(loss):
            raise SegflowError(f"training diverged at step {step + 1} (loss {loss.item()}); lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        # Early from-scratch steps can spike; clipping keeps one bad batch from wrecking BN/weights.
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
        opt.step()
        losses.append(float(loss.item()))
        done = step + 1
        if log_every and (done % log_every == 0 or done == steps):
            recent = losses[-log_every:]
            detail = " ".join(f"{k.removeprefix('loss_')}={v.item():.3f}" for k, v in parts.items())
            logger.info(
                "step %d/%d loss %.4f (mean of last %d) lr %.2e | %s | %.2f s/step",
                done, steps, sum(recent) / len(recent), len(recent), opt.param_groups[0]["lr"], detail,
                (time.perf_counter() - t0) / done,
            )
        if on_checkpoint is not None and ((checkpoint_every and done % checkpoint_every == 0) or done == steps):
            on_checkpoint(done, model)
    return losses
