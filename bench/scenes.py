"""Scripted tracking scenarios with exact ground truth, drawn here (not by `segflow.synth`).

Each scenario is a short 480x640 clip of shapes on a textured background whose motion
is written down, not sampled, so that each one tests one thing a tracker must survive:

* ``cross_opposite``: a larger square in front of a smaller disc, moving in opposite
  directions: the disc is hidden for ~8 frames while both move.
* ``cross_overtake``: a fast small triangle overtakes a slow large circle behind it
  (same direction, ~10 frames hidden).
* ``cross_speeds``: a perpendicular crossing of equal sizes (ring behind a triangle)
  and a fast head-on crossing of a circle and a square (relative speed 16 px/frame).
* ``occluder_short`` / ``occluder_long``: a moving panel (not a labeled class) fully
  hides objects of several sizes and speeds for 1-3 / 5-10 frames each.
* ``swap_same_class``: two circles, and two triangles, of one size each swap places
  (one passes behind the other).
* ``exit_reenter``: a square leaves on the right and comes back 12 frames later; a
  triangle leaves on the left and comes back 20 frames later a little lower.

Positions are keyframed (linear in between, held before the first and after the last),
objects are painted back to front and panels on top, and a ground-truth mask is the
set of pixels where its object is visible (at least `MIN_VISIBLE` of them).

    python bench/scenes.py OUT_DIR [--scenario NAME ...]   # writes NAME.mp4 + NAME.json
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

SIZE = (480, 640)
CLASSES = ("circle", "square", "ring", "triangle")  # shapes-demo's classes, ids 1..4
MIN_VISIBLE = 30


def position(keys: list[tuple[int, float, float]], f: int) -> tuple[float, float]:
    """(x, y) on frame `f`, linearly between keyframes (frame, x, y); held before the first and after the last."""
    fs = [k[0] for k in keys]
    return float(np.interp(f, fs, [k[1] for k in keys])), float(np.interp(f, fs, [k[2] for k in keys]))


@dataclass
class Obj:
    """A labeled shape: class, size (px across), colour and keyframes (frame, x, y)."""

    cls: str
    size: float
    color: tuple[int, int, int]
    keys: list[tuple[int, float, float]]
    spin: float = 0.0  # radians per frame (squares, triangles)

    def at(self, f: int) -> tuple[float, float]:
        """Centre (x, y) on frame `f`."""
        return position(self.keys, f)


@dataclass
class Panel:
    """An occluder (not a labeled class): a w x h textured rectangle on keyframes."""

    w: int
    h: int
    keys: list[tuple[int, float, float]]

    def at(self, f: int) -> tuple[float, float]:
        return position(self.keys, f)


@dataclass
class Scenario:
    """Objects back to front, panels on top."""

    name: str
    n_frames: int
    objects: list[Obj]
    panels: list[Panel] = field(default_factory=list)
    seed: int = 0
    crossing: bool = False  # a crossing scenario: 0 identity switches expected


def line(f0: int, x0: float, y0: float, vx: float, vy: float, f1: int) -> list[tuple[int, float, float]]:
    """Keyframes of a straight move from (x0, y0) at frame f0 at (vx, vy) px/frame until f1."""
    return [(f0, x0, y0), (f1, x0 + vx * (f1 - f0), y0 + vy * (f1 - f0))]


def scenarios() -> dict[str, Scenario]:
    """The bench's scenarios by name."""
    s = [
        Scenario("cross_opposite", 76, [
            Obj("circle", 44, (220, 60, 50), line(0, 80, 240, 6, 0, 76)),
            Obj("square", 110, (60, 90, 210), line(0, 560, 246, -4, 0, 76), spin=0.005),
            Obj("ring", 70, (230, 200, 60), line(0, 120, 90, 1.5, 0.2, 76)),
        ], seed=1, crossing=True),
        Scenario("cross_overtake", 72, [
            Obj("triangle", 40, (40, 170, 70), line(0, 30, 300, 9, -0.5, 72), spin=-0.02),
            Obj("circle", 120, (200, 80, 180), line(0, 200, 290, 2, 0, 72)),
            Obj("square", 50, (230, 150, 40), line(0, 500, 100, -2, 1, 72)),
        ], seed=2, crossing=True),
        Scenario("cross_speeds", 64, [
            Obj("ring", 70, (50, 200, 200), line(0, 180, 20, 0, 5, 64)),
            Obj("triangle", 70, (210, 70, 70), line(0, 20, 180, 5, 0, 64), spin=0.015),
            Obj("circle", 56, (240, 210, 90), line(10, 20, 390, 8, 0, 64)),
            Obj("square", 60, (80, 60, 200), line(10, 620, 395, -8, 0, 64), spin=-0.01),
        ], seed=3, crossing=True),
        Scenario("occluder_short", 60, [
            Obj("circle", 60, (200, 60, 60), line(0, 40, 80, 6, 0, 60)),
            Obj("square", 68, (60, 180, 80), line(0, 110, 200, 8, 0, 60)),
            Obj("triangle", 64, (70, 80, 200), line(0, 30, 320, 7, 0, 60)),
            Obj("ring", 56, (220, 200, 60), line(0, 90, 420, 5, 0, 60)),
        ], [Panel(80, 440, line(0, 600, 250, -4, 0, 60))], seed=4),
        Scenario("occluder_long", 80, [
            Obj("circle", 30, (210, 60, 60), line(0, 40, 80, 3, 0, 80)),
            Obj("square", 40, (60, 180, 80), line(0, 30, 200, 4, 0, 80)),
            Obj("triangle", 44, (70, 80, 200), line(0, 60, 320, 2, 0, 80)),
            Obj("ring", 50, (220, 200, 60), line(0, 20, 420, 3.5, 0, 80)),
        ], [Panel(90, 460, line(0, 380, 250, -4, 0, 80))], seed=5),
        Scenario("swap_same_class", 70, [
            Obj("circle", 60, (200, 70, 70), line(0, 120, 300, 6, 0, 70)),
            Obj("circle", 60, (190, 90, 60), line(0, 520, 306, -6, 0, 70)),
            Obj("triangle", 50, (60, 160, 90), line(0, 560, 110, -4, 0.5, 70), spin=0.02),
            Obj("triangle", 50, (50, 150, 110), line(0, 160, 120, 4, 0, 70), spin=-0.02),
        ], seed=6, crossing=True),
        Scenario("exit_reenter", 80, [
            Obj("square", 60, (60, 90, 210), [(0, 420, 200), (30, 700, 200), (42, 700, 200), (80, 380, 210)]),
            Obj("triangle", 54, (200, 70, 60), [(0, 240, 360), (26, -40, 360), (46, -40, 400), (80, 230, 400)]),
            Obj("circle", 50, (230, 200, 60), line(0, 320, 80, 1, 0, 80)),
        ], seed=7),
    ]
    return {x.name: x for x in s}


# ---- drawing -------------------------------------------------------------------------------------


def shape(cls: str, size: float, centre: tuple[float, float], angle: float) -> np.ndarray:
    """Bool (H, W) mask of one shape (may be partly or wholly outside the frame)."""
    h, w = SIZE
    m = np.zeros((h, w), np.uint8)
    x, y = centre
    sh = 4  # 1/16 px positions
    c = (int(round(x * 16)), int(round(y * 16)))
    if cls in ("circle", "ring"):
        cv2.circle(m, c, int(round(size / 2 * 16)), 1, -1, cv2.LINE_8, sh)
        if cls == "ring":
            cv2.circle(m, c, int(round(size / 4 * 16)), 0, -1, cv2.LINE_8, sh)
    else:
        k = 4 if cls == "square" else 3
        r = size / math.sqrt(2.0) if k == 4 else size / math.sqrt(3.0)
        t = angle + (math.pi / 4 if k == 4 else -math.pi / 2) + 2 * math.pi * np.arange(k) / k
        pts = np.stack([x + r * np.cos(t), y + r * np.sin(t)], 1)
        cv2.fillPoly(m, [np.round(pts * 16).astype(np.int32)], 1, cv2.LINE_8, sh)
    return m.astype(bool)


def _noise(rng: np.random.Generator, cells: int, amp: float) -> np.ndarray:
    """(H, W, 3) float32 smooth noise of about `amp` amplitude, `cells` blobs across."""
    h, w = SIZE
    g = rng.normal(0, amp, (cells, cells * w // h + 1, 3)).astype(np.float32)
    return cv2.resize(g, (w, h), interpolation=cv2.INTER_LINEAR)


def render(sc: Scenario) -> Iterator[tuple[np.ndarray, list[tuple[int, int, np.ndarray]]]]:
    """Frames of a scenario: (RGB uint8 (H, W, 3), [(object id >= 1, class id 1..4, bool mask)])."""
    rng = np.random.default_rng([sc.seed, 4242])
    h, w = SIZE
    top, bottom = rng.uniform(70, 190, 3), rng.uniform(70, 190, 3)
    ramp = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    background = top * (1 - ramp) + bottom * ramp + _noise(rng, 6, 14) + rng.normal(0, 3, (h, w, 3))
    fills = [np.clip(np.array(o.color, np.float32) + _noise(rng, 12, 18), 0, 255) for o in sc.objects]
    panel_fill = np.clip(np.float32(rng.uniform(90, 160)) + _noise(rng, 20, 25), 0, 255)
    for f in range(sc.n_frames):
        img = background.copy()
        owner = np.full((h, w), -1, np.int32)
        for i, o in enumerate(sc.objects):
            m = shape(o.cls, o.size, o.at(f), o.spin * f)
            owner[m] = i
            img[m] = fills[i][m]
        for p in sc.panels:
            x, y = p.at(f)
            x0, x1 = int(max(round(x - p.w / 2), 0)), int(min(round(x + p.w / 2), w))
            y0, y1 = int(max(round(y - p.h / 2), 0)), int(min(round(y + p.h / 2), h))
            if x0 < x1 and y0 < y1:
                owner[y0:y1, x0:x1] = -2
                img[y0:y1, x0:x1] = panel_fill[y0:y1, x0:x1]
        gt = []
        for i, o in enumerate(sc.objects):
            m = owner == i
            if m.sum() >= MIN_VISIBLE:
                gt.append((i + 1, CLASSES.index(o.cls) + 1, m))
        yield np.clip(img, 0, 255).astype(np.uint8), gt


def write(sc: Scenario, out: Path) -> tuple[Path, Path]:
    """`out/NAME.mp4` (H.264, 30 fps, as a user's clip) and `out/NAME.json` (ground truth:
    per frame, [object id, class name, COCO RLE with str counts])."""
    import imageio_ffmpeg
    import pycocotools.mask as mask_utils

    out.mkdir(parents=True, exist_ok=True)
    video, truth = out / f"{sc.name}.mp4", out / f"{sc.name}.json"
    h, w = SIZE
    writer = imageio_ffmpeg.write_frames(str(video), (w, h), fps=30, codec="libx264", quality=8,
                                         macro_block_size=16)
    writer.send(None)
    frames = []
    for img, gt in render(sc):
        writer.send(np.ascontiguousarray(img))
        rows = []
        for oid, cid, m in gt:
            r = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            rows.append([oid, CLASSES[cid - 1], {"size": r["size"], "counts": r["counts"].decode("ascii")}])
        frames.append(rows)
    writer.close()
    truth.write_text(json.dumps({"scenario": sc.name, "size": list(SIZE), "frames": frames}))
    return video, truth


if __name__ == "__main__":
    p = argparse.ArgumentParser(description="Write the tracking scenarios as clips with ground truth.")
    p.add_argument("out", type=Path)
    p.add_argument("--scenario", nargs="*", default=None)
    a = p.parse_args()
    for name, sc in scenarios().items():
        if a.scenario is None or name in a.scenario:
            print(*write(sc, a.out))
