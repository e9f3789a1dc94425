"""Deterministic synthetic "shapes" videos with exact per-frame instance ground truth.

A scene is a textured, noisy background with static clutter (lines, arcs, elongated
blobs: never one of the labeled classes), a few labeled shapes that move, cross,
leave and re-enter the frame, and optional occluder bars (textured full-span strips,
not a labeled class) drawn on top of everything. Shapes are painted back to front
(painter's algorithm) into an owner map, so every ground-truth mask is exactly the
set of pixels where that shape is visible: nothing antialiased, nothing guessed.

Everything is drawn from ``numpy.random.Generator`` streams spawned from the seed, and
nothing depends on ``n_frames``, so the first N frames of a longer video equal the
N frames of a shorter one with the same seed. Frames are produced one at a time.

Here: the scene's state, how it moves and how a frame is composed; the shapes
themselves are `segflow.synth.shapes`, their fills and the background
`segflow.synth.textures`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from segflow.errors import SegflowError
from segflow.synth.shapes import CLASSES, circumradius, shape_mask
from segflow.synth.textures import color_dir, make_background, make_texture, pick_color

MIN_VISIBLE_AREA = 30
"""Instances with fewer visible pixels than this are left out of the ground truth."""

MAX_HIDDEN_FRAMES = 20
"""A shape fully hidden inside the frame this many frames in a row comes to the front."""

MIN_SIZE = 64
"""Smallest frame height or width accepted."""

_BAR = -2  # owner-map value of occluder pixels (shapes are 0..n-1, background -1)


@dataclass
class Instance:
    """One visible instance on one frame."""

    track_id: int
    class_name: str
    mask: np.ndarray  # bool, (H, W), visible pixels only


@dataclass
class SynthFrame:
    """One rendered frame and its ground truth (instances sorted by track_id)."""

    index: int
    image: np.ndarray  # uint8 RGB (H, W, 3)
    instances: list[Instance]


def check_params(n_frames: int, size: tuple[int, int], *, multiple_of: int = 1) -> tuple[int, int]:
    """Validate a frame count and an (H, W) size; return (H, W) or raise SegflowError."""
    if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) or n_frames < 1:
        raise SegflowError(f"frames must be an integer >= 1, got {n_frames!r}")
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise SegflowError(f"size must be (height, width), got {size!r}") from None
    for label, v in (("height", h), ("width", w)):
        if v < MIN_SIZE or v % multiple_of:
            rule = f">= {MIN_SIZE}" + (f" and a multiple of {multiple_of}" if multiple_of > 1 else "")
            raise SegflowError(f"{label} must be {rule}, got {v}")
    return h, w


# --------------------------------------------------------------------------- scene state


@dataclass
class _Shape:
    """A labeled moving shape (internal state)."""

    track_id: int
    class_name: str
    size: float  # px across: diameter, or side of square/triangle
    inner: float  # ring hole radius / outer radius
    pos: np.ndarray  # centre (x, y)
    vel: np.ndarray  # px / frame
    acc: np.ndarray  # px / frame^2
    speed: tuple[float, float]  # clamp range of |vel|
    angle: float
    spin: float  # rad / frame
    bounds: tuple[float, float, float, float]  # x_lo, x_hi, y_lo, y_hi for the centre
    tile: np.ndarray  # uint8 (T, T, 3) textured fill, moves with the shape
    z: float
    hidden: int = 0  # consecutive frames in the frame but (almost) fully covered


@dataclass
class _Bar:
    """An occluder: a textured full-span strip, drawn on top of shapes, not a class."""

    vertical: bool
    pos: float  # centre coordinate across the strip
    width: int
    vel: float
    strip: np.ndarray  # uint8: (H, width, 3) if vertical else (width, W, 3)


@dataclass
class _Scene:
    hw: tuple[int, int]
    background: np.ndarray
    shapes: list[_Shape]
    bars: list[_Bar]
    noise_sigma: float
    flicker: tuple[float, float, float]  # amplitude, period (frames), phase


def _scale(hw: tuple[int, int]) -> float:
    """Frame scale relative to the reference 480x640 frame."""
    return min(hw[0] / 480, hw[1] / 640)


def size_range(hw: tuple[int, int]) -> tuple[float, float]:
    """Shape sizes (px across) for a frame size: 24..140 at 480x640, floor 20 px."""
    s = _scale(hw)
    lo = max(20.0, 24.0 * s)
    return lo, max(2.0 * lo, 140.0 * s)


def _make_shape(rng: np.random.Generator, hw: tuple[int, int], track_id: int, cls: str, base: np.ndarray, z: float) -> _Shape:
    h, w = hw
    s = _scale(hw)
    lo, hi = size_range(hw)
    size = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))  # log-uniform: many small
    # Centre walls: negative extent keeps part of the shape in view, positive extents
    # let it leave completely, turn around out of view and re-enter (same track_id).
    ext = rng.uniform(-0.3, 0.9, 4) * size
    bounds = (-ext[0], w + ext[1], -ext[2], h + ext[3])
    pos = np.array([rng.uniform(bounds[0], bounds[1]), rng.uniform(bounds[2], bounds[3])])
    nominal = float(math.exp(rng.uniform(math.log(0.5), math.log(6.0)))) * max(s, 0.5)
    a = rng.uniform(0, 2 * math.pi)
    vel = nominal * np.array([math.cos(a), math.sin(a)])
    acc = rng.normal(0, 0.02 * nominal, 2)
    spin = rng.uniform(-0.04, 0.04) if cls in ("square", "triangle") else 0.0
    side = 2 * math.ceil(circumradius(cls, size)) + 6
    tile = make_texture(rng, side, base)
    return _Shape(
        track_id=track_id, class_name=cls, size=size, inner=float(rng.uniform(0.4, 0.65)),
        pos=pos, vel=vel, acc=acc, speed=(0.5 * nominal, 1.5 * nominal),
        angle=float(rng.uniform(0, 2 * math.pi)), spin=float(spin), bounds=bounds, tile=tile, z=z,
    )


def _make_bar(rng: np.random.Generator, hw: tuple[int, int], avoid: list[tuple[np.ndarray, float]]) -> _Bar:
    h, w = hw
    s = _scale(hw)
    vertical = bool(rng.random() < 0.5)
    # Narrower than the smallest shape, so a shape behind a bar splits into parts
    # instead of vanishing.
    width = int(round(rng.uniform(6, 16) * max(s, 0.5)))
    length = h if vertical else w
    across = w if vertical else h
    c1 = pick_color(rng, avoid)
    c2 = np.clip(c1 + color_dir(rng) * rng.uniform(25, 50) * rng.choice([-1.0, 1.0]), 0, 255)
    period = rng.uniform(6, 14)
    u = np.arange(length, dtype=np.float32)[:, None] + np.arange(width, dtype=np.float32)[None, :]
    hatch = (np.floor(u / period) % 2).astype(np.float32)[..., None]  # diagonal hatching
    strip = c1 * (1 - hatch) + c2 * hatch + rng.standard_normal((length, width, 3)).astype(np.float32) * 4
    strip = np.clip(strip, 0, 255).astype(np.uint8)
    if not vertical:
        strip = np.ascontiguousarray(strip.transpose(1, 0, 2))
    return _Bar(
        vertical=vertical, pos=float(rng.uniform(0.15, 0.85) * across), width=width,
        vel=float(rng.uniform(-1.0, 1.0) * max(s, 0.5)), strip=strip,
    )


def _build_scene(
    rng: np.random.Generator,
    hw: tuple[int, int],
    n_objects: int | None,
    occluders: int | None,
    classes: Sequence[str] | None,
) -> _Scene:
    """Draw every per-video choice: background, shapes, bars, noise level."""
    background, bg_base = make_background(rng, hw)
    if n_objects is None:
        n_objects = len(classes) if classes else int(rng.integers(3, 9))
    if occluders is None:
        occluders = int(rng.integers(0, 3))
    avoid: list[tuple[np.ndarray, float]] = [(bg_base, 110.0)]
    shapes = []
    z_order = rng.permutation(n_objects)
    for i in range(n_objects):
        cls = classes[i % len(classes)] if classes else CLASSES[int(rng.integers(len(CLASSES)))]
        base = pick_color(rng, avoid)
        avoid.append((base, 40.0))  # neighbouring shapes should not merge visually
        shapes.append(_make_shape(rng, hw, i + 1, cls, base, float(z_order[i])))
    bars = [_make_bar(rng, hw, [(bg_base, 90.0)] + [(a, 50.0) for a, _ in avoid[1:]]) for _ in range(occluders)]
    flicker = (float(rng.uniform(0, 0.04)), float(rng.uniform(20, 80)), float(rng.uniform(0, 2 * math.pi)))
    return _Scene(hw, background, shapes, bars, float(rng.uniform(2.0, 7.0)), flicker)


# --------------------------------------------------------------------------- per frame


def _tile_window(shape: _Shape, hw: tuple[int, int]) -> tuple[int, int, int, int, int, int] | None:
    """Frame window (y0, y1, x0, x1) covered by the shape's tile and the tile origin."""
    side = shape.tile.shape[0]
    ox = math.floor(shape.pos[0] + 0.5) - side // 2
    oy = math.floor(shape.pos[1] + 0.5) - side // 2
    x0, x1 = max(ox, 0), min(ox + side, hw[1])
    y0, y1 = max(oy, 0), min(oy + side, hw[0])
    if x0 >= x1 or y0 >= y1:
        return None
    return y0, y1, x0, x1, oy, ox


def _bar_window(bar: _Bar, hw: tuple[int, int]) -> tuple[int, int]:
    across = hw[1] if bar.vertical else hw[0]
    a0 = math.floor(bar.pos - bar.width / 2 + 0.5)
    return max(a0, 0), min(a0 + bar.width, across)


def _render(scene: _Scene, t: int, rng: np.random.Generator) -> SynthFrame:
    """Paint the scene at its current state; update occlusion bookkeeping."""
    h, w = scene.hw
    img = scene.background.copy()
    owner = np.full((h, w), -1, np.int16)
    drawn: dict[int, tuple[int, int, int, int, int]] = {}
    order = sorted(range(len(scene.shapes)), key=lambda k: scene.shapes[k].z)
    for k in order:  # back to front
        sh = scene.shapes[k]
        win = _tile_window(sh, scene.hw)
        if win is None:
            continue
        y0, y1, x0, x1, oy, ox = win
        m = shape_mask(sh.class_name, sh.size, (sh.pos[0] - x0, sh.pos[1] - y0), (y1 - y0, x1 - x0),
                       angle=sh.angle, inner=sh.inner)
        area = int(np.count_nonzero(m))
        if area == 0:
            continue
        img[y0:y1, x0:x1][m] = sh.tile[y0 - oy:y1 - oy, x0 - ox:x1 - ox][m]
        owner[y0:y1, x0:x1][m] = k
        drawn[k] = (y0, y1, x0, x1, area)
    for bar in scene.bars:  # occluders cover everything
        a0, a1 = _bar_window(bar, scene.hw)
        if a0 >= a1:
            continue
        s0 = a0 - math.floor(bar.pos - bar.width / 2 + 0.5)
        if bar.vertical:
            img[:, a0:a1] = bar.strip[:, s0:s0 + a1 - a0]
            owner[:, a0:a1] = _BAR
        else:
            img[a0:a1, :] = bar.strip[s0:s0 + a1 - a0, :]
            owner[a0:a1, :] = _BAR

    instances: list[Instance] = []
    top = max((s.z for s in scene.shapes), default=0.0)
    for k, sh in enumerate(scene.shapes):  # track_id order
        if k not in drawn:
            sh.hidden = 0
            continue
        y0, y1, x0, x1, area = drawn[k]
        vis = owner[y0:y1, x0:x1] == k
        n_vis = int(np.count_nonzero(vis))
        # Cap full occlusions: a shape that is in the frame but hidden too long comes
        # to the front on the next frame (trackers must bridge gaps up to this long).
        sh.hidden = sh.hidden + 1 if (area >= MIN_VISIBLE_AREA and n_vis < MIN_VISIBLE_AREA) else 0
        if sh.hidden >= MAX_HIDDEN_FRAMES:
            top += 1.0
            sh.z, sh.hidden = top, 0
        if n_vis >= MIN_VISIBLE_AREA:
            mask = np.zeros((h, w), bool)
            mask[y0:y1, x0:x1] = vis
            instances.append(Instance(sh.track_id, sh.class_name, mask))
    return SynthFrame(t, _finish(scene, img, t, rng), instances)


def _finish(scene: _Scene, img: np.ndarray, t: int, rng: np.random.Generator) -> np.ndarray:
    """Global brightness flicker plus fresh per-frame sensor noise."""
    amp, period, phase = scene.flicker
    f = img.astype(np.float32)
    f *= np.float32(1.0 + amp * math.sin(2 * math.pi * t / period + phase))
    f += rng.standard_normal(f.shape, dtype=np.float32) * np.float32(scene.noise_sigma)
    np.clip(f, 0, 255, out=f)
    return f.astype(np.uint8)


def _step(scene: _Scene, rng: np.random.Generator) -> None:
    """Advance motion by one frame: drift in acceleration, speed clamp, bounce off walls."""
    redraw = rng.random(len(scene.shapes)) < 0.03  # drawn every frame: fixed stream layout
    jitter = rng.standard_normal((len(scene.shapes), 2))
    for sh, new, j in zip(scene.shapes, redraw, jitter):
        if new:
            sh.acc = j * 0.02 * sh.speed[1] / 1.5
        sh.vel = sh.vel + sh.acc
        sp = float(np.hypot(*sh.vel))
        lo, hi = sh.speed
        if sp > hi or sp < lo:
            sh.vel = sh.vel * (min(max(sp, lo), hi) / max(sp, 1e-9))
        sh.pos = sh.pos + sh.vel
        sh.angle += sh.spin
        for axis, (lo_w, hi_w) in enumerate((sh.bounds[:2], sh.bounds[2:])):
            if sh.pos[axis] < lo_w:
                sh.pos[axis], sh.vel[axis] = 2 * lo_w - sh.pos[axis], abs(sh.vel[axis])
            elif sh.pos[axis] > hi_w:
                sh.pos[axis], sh.vel[axis] = 2 * hi_w - sh.pos[axis], -abs(sh.vel[axis])
    for bar in scene.bars:
        across = scene.hw[1] if bar.vertical else scene.hw[0]
        bar.pos += bar.vel
        lo_w, hi_w = bar.width / 2, across - bar.width / 2
        if not lo_w <= bar.pos <= hi_w:
            bar.vel = -bar.vel
            bar.pos = min(max(bar.pos, lo_w), hi_w)


def generate(
    seed: int,
    n_frames: int = 120,
    size: tuple[int, int] = (480, 640),
    n_objects: int | None = None,
    *,
    occluders: int | None = None,
    classes: Sequence[str] | None = None,
) -> Iterator[SynthFrame]:
    """Stream the frames of synthetic video ``seed`` with their visible-instance ground truth.

    ``size`` is (height, width). ``n_objects`` defaults to a seeded 3..8 (or
    ``len(classes)``), ``occluders`` (bars) to a seeded 0..2; ``classes`` fixes the
    class of shape i to ``classes[i % len(classes)]``. The same arguments always
    give byte-identical frames and identical ground truth; frame i does not depend on
    ``n_frames``. One frame is in memory at a time.
    """
    hw = check_params(n_frames, size)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SegflowError(f"seed must be an integer >= 0, got {seed!r}")
    for label, v, hi in (("n_objects", n_objects, 1000), ("occluders", occluders, 50)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v <= hi):
            raise SegflowError(f"{label} must be an integer in 0..{hi}, got {v!r}")
    if classes is not None:
        bad = [c for c in classes if c not in CLASSES]
        if bad or not classes:
            raise SegflowError(f"classes must be a non-empty list from {', '.join(CLASSES)}, got {list(classes)!r}")
    # Independent streams: per-frame noise never shifts motion or layout.
    setup_rng, motion_rng, noise_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(3))
    return _frames(_build_scene(setup_rng, hw, n_objects, occluders, classes), n_frames, motion_rng, noise_rng)


def _frames(scene: _Scene, n_frames: int, motion_rng: np.random.Generator, noise_rng: np.random.Generator) -> Iterator[SynthFrame]:
    for t in range(n_frames):
        yield _render(scene, t, noise_rng)
        _step(scene, motion_rng)
