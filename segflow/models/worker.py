"""The model in a process of its own, for a GPU.

A GPU forward is hundreds of kernel launches per batch, each a trip from Python into
torch that gives up the GIL and takes it back. In a thread of the flow's process the
forward takes turns with everything else holding the GIL there (the other stages,
Prefect's engine, logging), so the GPU idles while its launching thread waits: R50-FPN
ran at 0.37 of its bare speed inside the flow on an H200 (bench/RESULTS.md). Here one
long-lived worker process per device owns the model, decodes and segments whole frame
ranges, and hands back each range's `Detections`; the flow's process keeps the cheap
stages and every byte written (storage stays in `storage/`).

The worker is started on first use (spawned: CUDA cannot be forked) and reused for
the life of the process. `SEGFLOW_MODEL_PROCESS=0` keeps the model in-process,
`=1` uses the worker on the CPU too (tests do, to check both give the same output).
"""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from segflow.errors import SegflowError
from segflow.models.devices import Device
from segflow.settings import env_switch

_POOLS: dict[str, ProcessPoolExecutor] = {}
_GUARD = threading.Lock()
_REFS: dict[tuple[str, str], object] = {}  # in the worker: resolved once (a checkpoint's digest reads the file)


class NotInWorker(SegflowError):
    """The worker cannot resolve the model (registered in the parent only, e.g. from a
    notebook): the caller segments in-process instead."""


def wanted(device: Device) -> bool:
    """Whether ranges for `device` should be segmented by the worker process."""
    setting = env_switch("SEGFLOW_MODEL_PROCESS")
    if setting is False or multiprocessing.current_process().daemon:  # a Dask worker, say: it may not start processes
        return False
    return setting is True or device.type == "cuda"


def segment_in_worker(spec: str, digest: str, device: Device, video, rng, batch_size: int,
                      score_floor: float, mixed_precision: bool):
    """`runner.segment_range` for one range, run by the device's worker process.

    Returns `(Detections, frames_run)`. The worker resolves `spec` itself and refuses
    weights whose digest is not `digest` (the file changed since the job was checked).
    A worker that dies (a driver fault, the OOM killer) is replaced at the next call;
    this one raises, for the task's retries to take over.
    """
    return _call(device, rng.name, "segment_with", spec, digest, video, rng, str(device), batch_size, score_floor,
                 mixed_precision)


def images_in_worker(spec: str, digest: str, device: Device, videos: list, batch_size: int,
                     score_floor: float, mixed_precision: bool):
    """`runner.segment_same_size` (images of one size, batched) run by the worker process."""
    what = f"{len(videos)} images from {videos[0].source}"
    return _call(device, what, "segment_same_size", spec, digest, videos, str(device), batch_size, score_floor,
                 mixed_precision)


def _call(device: Device, what: str, fn: str, spec: str, digest: str, *args):
    pool = _pool(str(device))
    try:
        return pool.submit(_segment, fn, spec, digest, *args).result()
    except BrokenProcessPool:
        _discard(str(device), pool)
        raise RuntimeError(f"the model process for {device} died while segmenting {what}") from None


def _pool(device: str) -> ProcessPoolExecutor:
    with _GUARD:
        if device not in _POOLS:
            _POOLS[device] = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        return _POOLS[device]


def _discard(device: str, pool: ProcessPoolExecutor) -> None:
    with _GUARD:
        if _POOLS.get(device) is pool:
            del _POOLS[device]
    pool.shutdown(wait=False, cancel_futures=True)


def shutdown() -> None:
    """Stop every worker process (they also stop with this process)."""
    with _GUARD:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for pool in pools:
        pool.shutdown(wait=True, cancel_futures=True)


def _segment(fn: str, spec: str, digest: str, *args):
    """In the worker: load the model once, run `runner.<fn>(model ref, *args)`."""
    from segflow.models import runner
    from segflow.models.registry import resolve_model

    if (spec, digest) not in _REFS:
        try:
            ref = resolve_model(spec)
        except SegflowError as exc:
            raise NotInWorker(str(exc)) from None
        if ref.digest != digest:
            raise SegflowError(f"--model {spec}: the weights changed on disk while the job ran")
        _REFS[(spec, digest)] = ref
    return getattr(runner, fn)(_REFS[(spec, digest)], *args)
