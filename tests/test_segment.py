"""The segment stage: batching, out-of-memory halving, the raw-output contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segflow.tasks.contracts import FrameRange
from segflow.tasks.decode import probe, read_batches
from segflow.tasks.segment import segment_batches, segment_range
from tests.color_model import ColorModel


class TightGPU(ColorModel):
    """Raises CUDA out-of-memory whenever a batch is larger than `fits`."""

    fits = 1
    sizes: list[int] = []

    def forward(self, images):
        type(self).sizes.append(len(images))
        if len(images) > self.fits:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().forward(images)


def test_out_of_memory_halves_the_batch(clip):
    video = probe(clip)
    TightGPU.sizes = []
    det, frames = segment_range(TightGPU(), video, FrameRange(0, 7), torch.device("cpu"), 8, 0.05)
    assert frames == 8 and TightGPU.sizes[:3] == [8, 4, 2] and set(TightGPU.sizes[3:]) == {1}
    reference, _ = segment_batches(ColorModel(), read_batches(video, FrameRange(0, 7), 8), torch.device("cpu"))
    assert np.array_equal(det.frame, reference.frame) and det.rles == reference.rles


def test_other_errors_are_not_retried_here(clip):
    class Broken(ColorModel):
        def forward(self, images):
            raise RuntimeError("CUDA error: device-side assert triggered")

    with pytest.raises(RuntimeError, match="device-side"):
        segment_range(Broken(), probe(clip), FrameRange(0, 3), torch.device("cpu"), 4, 0.05)


def test_raw_output_contract(clip):
    det, frames = segment_batches(ColorModel(), read_batches(probe(clip), FrameRange(2, 4), 2), torch.device("cpu"))
    assert frames == 3 and set(det.frame) == {2, 3, 4}
    assert det.boxes.shape == (len(det), 4) and det.score.dtype == np.float32
    assert all(r["size"] == [240, 320] for r in det.rles)
    assert np.allclose(sorted(set(det.timestamp)), [0.2, 0.3, 0.4])


def test_segment_task_is_tagged_for_a_gpu_limit_only_on_a_gpu():
    import torch

    from segflow.tasks.segment import GPU_TAG, for_device

    assert GPU_TAG in for_device(torch.device("cuda")).tags
    assert not for_device(torch.device("cpu")).tags  # no concurrency-slot API call per range on the CPU
