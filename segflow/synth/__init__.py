"""Deterministic synthetic shapes videos with exact instance ground truth.

Used to train and evaluate the bundled ``shapes-demo`` model and by the tests:
:func:`generate` streams frames with visible-instance masks; :func:`write_clip`
writes an H.264 mp4 with matching COCO and YouTube-VIS JSON.
"""

from segflow.synth.scene import CLASSES, MIN_VISIBLE_AREA, Instance, SynthFrame, generate
from segflow.synth.writer import SynthPaths, write_clip

__all__ = ["CLASSES", "MIN_VISIBLE_AREA", "Instance", "SynthFrame", "SynthPaths", "generate", "write_clip"]
