"""Stage 1, decode: each input's frame ranges, the unit every later stage works in.

Frames themselves are decoded inside the segment stage, a range at a time
(`segflow.media.read_batches`), so no frame crosses a task boundary: this stage plans
the ranges from what validating the job learned of each input (`segflow.media.probe`).
"""

from __future__ import annotations

from dataclasses import dataclass

from prefect import task
from prefect.cache_policies import NO_CACHE

from segflow.contracts import FrameRange, VideoInfo
from segflow.media import input_ranges


@dataclass(frozen=True)
class DecodeConfig:
    """Which frames to label: `start_frame..end_frame` (None: to the last), cut into
    ranges of `frames_per_range` (aligned, so an extended range reuses cached ones)."""

    start_frame: int
    end_frame: int | None
    frames_per_range: int


def decode_config(job) -> DecodeConfig:
    s = job.settings
    return DecodeConfig(s.start_frame, s.end_frame, s.frames_per_range)


@task(name="decode", cache_policy=NO_CACHE)
def decode_task(config: DecodeConfig, videos: list[VideoInfo]) -> list[list[FrameRange]]:
    """The frame ranges of each input (one video, or a group of images)."""
    return [input_ranges(v, config.start_frame, config.end_frame, config.frames_per_range) for v in videos]
