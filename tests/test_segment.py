"""The segment stage: batching, out-of-memory halving, the raw-output contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segflow.contracts import FrameRange
from segflow.media import probe, read_batches
from segflow.models.inference import segment_batches
from segflow.models.runner import segment_range
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


def test_segment_task_is_tagged_for_a_gpu_limit_only_on_a_gpu_and_when_asked(monkeypatch):
    import torch

    from segflow.tasks.segment import GPU_TAG
    from segflow.tasks.segment import for_device as segment_for

    from types import SimpleNamespace

    def for_device(device):
        return segment_for(SimpleNamespace(device=device))

    assert not for_device(torch.device("cuda")).tags  # no concurrency-slot API call per range by default
    monkeypatch.setenv("SEGFLOW_GPU_TAG", "1")
    assert GPU_TAG in for_device(torch.device("cuda")).tags
    assert not for_device(torch.device("cpu")).tags


def test_multithreaded_decoding_gives_the_same_frames(clip):
    """A GPU range decodes with several decoder threads (`decode_threads`): same frames."""
    video = probe(clip)
    one = list(read_batches(video, FrameRange(0, 11), 4, threads=1))
    four = list(read_batches(video, FrameRange(0, 11), 4, threads=4))
    assert [b.indices.tolist() for b in one] == [b.indices.tolist() for b in four]
    assert all(np.array_equal(a.frames, b.frames) for a, b in zip(one, four))


def test_mixed_precision_only_on_a_gpu_and_keyed_in_the_raw_cache(tmp_path):
    from types import SimpleNamespace

    from segflow.job import Job
    from segflow.settings import make_settings
    from segflow.storage.layout import Layout
    from segflow.contracts import VideoInfo
    from segflow.tasks.segment import raw_key

    def job(device: str, precision: str):
        return SimpleNamespace(device=torch.device(device), settings=make_settings(precision=precision))

    mixed = Job.mixed_precision.fget
    assert mixed(job("cuda", "auto")) and mixed(job("cuda", "mixed"))
    assert not mixed(job("cuda", "fp32")) and not mixed(job("cpu", "auto")) and not mixed(job("cpu", "mixed"))

    video = VideoInfo(str(tmp_path / "v.mp4"), "vid", "video", 10, 32, 32, 10.0)
    model = SimpleNamespace(model_id="m@1")
    keys = {}
    for device, precision in (("cpu", "auto"), ("cuda", "fp32"), ("cuda", "auto")):
        j = SimpleNamespace(mixed_precision=mixed(job(device, precision)), model=model, score_floor=0.05,
                            layout=Layout(tmp_path))
        keys[device, precision] = raw_key(j, video, FrameRange(0, 9))
    assert keys["cpu", "auto"] == keys["cuda", "fp32"]  # fp32 output is shared, whatever the device
    assert keys["cuda", "auto"] != keys["cuda", "fp32"]  # float16 output is cached apart


def test_cpu_ranges_are_decoded_before_the_model_runs(clip, monkeypatch):
    """The decoder is closed before the first forward (decord's open reader keeps
    decoding and pooling frames: RSS climbs), unless on a GPU or too large to hold."""
    from segflow import media as decode
    from segflow.models import runner as segment

    video, rng, cpu = probe(clip), FrameRange(0, 9), torch.device("cpu")
    assert segment.decode_first(video, rng, cpu) and not segment.decode_first(video, rng, torch.device("cuda"))
    monkeypatch.setattr(segment, "PREDECODE_BYTES", 9 * 240 * 320 * 3)  # 9 frames, not 10
    assert not segment.decode_first(video, rng, cpu)
    monkeypatch.undo()
    monkeypatch.setenv("SEGFLOW_STREAM_DECODE", "1")
    assert not segment.decode_first(video, rng, cpu)
    monkeypatch.delenv("SEGFLOW_STREAM_DECODE")

    import gc
    import weakref

    readers: list = []
    real_reader = decode._video_reader

    def tracked(*a, **k):
        vr = real_reader(*a, **k)
        readers.append(weakref.ref(vr))
        return vr

    class Watching(ColorModel):
        seen: list[int] = []

        def forward(self, images):
            gc.collect()
            type(self).seen.append(sum(r() is not None for r in readers))  # decoders open now
            return super().forward(images)

    monkeypatch.setattr(decode, "_video_reader", tracked)
    det, frames = segment_range(Watching(), video, rng, cpu, 4, 0.05)
    assert len(readers) == 1 and Watching.seen == [0, 0, 0]
    reference, _ = segment_batches(ColorModel(), read_batches(video, rng, 4), cpu)
    assert frames == 10 and det.rles == reference.rles and np.array_equal(det.frame, reference.frame)
    monkeypatch.setenv("SEGFLOW_STREAM_DECODE", "1")  # the control: streaming keeps it open
    Watching.seen = []
    segment_range(Watching(), video, rng, cpu, 1, 0.05)  # ten batches, two decoded ahead
    assert Watching.seen[:5] == [1] * 5


def test_default_batch_follows_the_device():
    from segflow.job import default_batch_size
    from segflow.settings import make_settings

    assert default_batch_size("cpu") == 2 and default_batch_size(torch.device("cuda")) == 4
    assert make_settings().batch_size is None and make_settings(batch_size=3).batch_size == 3


def test_a_shards_images_of_one_size_share_a_forward_and_match_alone(tmp_path, monkeypatch):
    from PIL import Image

    from segflow.job import prepare_job
    from segflow.settings import make_settings
    from segflow.shards import make_shard
    from segflow.storage.table import load_detections
    from segflow.tasks import segment as seg
    from tests import clips

    paths = []
    for i, frame in enumerate(clips.render(n_frames=5, seed=5)):
        if i == 2:
            frame = np.ascontiguousarray(frame[:, : frame.shape[1] // 2])  # another size in between
        Image.fromarray(frame).save(tmp_path / f"im{i}.png")
        paths.append(str(tmp_path / f"im{i}.png"))
    settings = make_settings(model="test-color", batch_size=2)
    batch_sizes: list[int] = []
    from segflow.models import runner

    real = runner.segment_batches  # segment_same_size runs the batches through it

    def counting(model, batches, *args, **kwargs):
        return real(model, (batch_sizes.append(len(b.indices)) or b for b in batches), *args, **kwargs)

    monkeypatch.setattr(runner, "segment_batches", counting)
    job = prepare_job(paths, str(tmp_path / "together"), settings)
    shard = make_shard(job.videos)
    (together,) = seg.segment_task.fn(seg.segment_config(job), works_of(job, [FrameRange(0, 4)], [shard]))
    assert sorted(batch_sizes) == [1, 2, 2] and together.frames_run == 5 and together.per_member == (1,) * 5
    got = load_detections(together.file)
    alone_job = prepare_job(paths, str(tmp_path / "alone"), settings)
    alone = [seg.segment_one(seg.segment_config(alone_job), w) for w in works_of(alone_job, [FrameRange(0, 0)] * 5)]
    assert sum(len(load_detections(o.file)) for o in alone) > 10
    for i, b in enumerate(alone):
        mine, want = got.take(np.flatnonzero(got.frame == i)), load_detections(b.file)
        assert mine.rles == want.rles and (want.frame == 0).all()
        np.testing.assert_array_equal(mine.label, want.label)
        np.testing.assert_allclose(mine.score, want.score, atol=1e-5)
    (again,) = seg.segment_task.fn(seg.segment_config(job), works_of(job, [FrameRange(0, 4)], [shard]))
    assert again.cached  # saved: nothing run again
    # Another shard with two of these images takes them from this shard's raw file.
    batch_sizes.clear()
    other = make_shard(job.videos[3:])
    (reused,) = seg.segment_task.fn(seg.segment_config(job), works_of(job, [FrameRange(0, 1)], [other]))
    assert batch_sizes == [] and reused.frames_run == 0 and reused.per_member == (0, 0)
    two = load_detections(reused.file)
    assert two.rles == got.take(np.flatnonzero(got.frame >= 3)).rles and two.frame.tolist() == [
        f - 3 for f in got.frame[got.frame >= 3].tolist()]


def works_of(job, ranges, inputs=None):
    """Each input's range of `job` (or of `inputs`) as the segment stage's `Work` (key and path set)."""
    from segflow.contracts import Work
    from segflow.pipeline import keyed
    from segflow.tasks import segment as seg

    config = seg.segment_config(job)
    return [keyed(seg.STAGE, config, job.layout, Work(v, r)) for v, r in zip(inputs or job.videos, ranges)]
