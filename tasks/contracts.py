"""Moved to `segflow.contracts` (the small types between stages); this name stays for
branches written against it and goes once nothing imports it."""

from segflow.contracts import *  # noqa: F401,F403
from segflow.contracts import Detections, FrameBatch, FrameRange, Polygons, StageOutput, VideoInfo  # noqa: F401
