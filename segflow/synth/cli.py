"""``segflow synth``: write deterministic synthetic shapes clips with ground truth."""

from __future__ import annotations

from pathlib import Path

import click

from segflow.errors import SegflowError
from segflow.storage.layout import check_folder_writable
from segflow.synth.scene import check_params
from segflow.synth.writer import MACRO_BLOCK, write_clip


def _run(seed: int, out: Path, frames: int, width: int, height: int, name: str | None, count: int,
         fps: float, objects: int | None, occluders: int | None) -> None:
    """Validate everything first (nothing is written on bad input), then write the clips."""
    if seed < 0:
        raise SegflowError(f"--seed must be >= 0, got {seed}")
    if count < 1:
        raise SegflowError(f"--count must be >= 1, got {count}")
    if not 0 < fps <= 1000:
        raise SegflowError(f"--fps must be in (0, 1000], got {fps}")
    if objects is not None and not 0 <= objects <= 1000:
        raise SegflowError(f"--objects must be in 0..1000, got {objects}")
    if occluders is not None and not 0 <= occluders <= 50:
        raise SegflowError(f"--occluders must be in 0..50, got {occluders}")
    try:
        check_params(frames, (height, width), multiple_of=MACRO_BLOCK)
    except SegflowError as exc:  # name the flag the user typed
        raise SegflowError(f"--{exc}") from None
    if name is not None and ("/" in name or "\\" in name or name.startswith(".") or not name):
        raise SegflowError(f"--name must be a plain file stem, got {name!r}")
    check_folder_writable(Path(out).resolve(), f"--out {out}")
    for s in range(seed, seed + count):
        clip_name = name if (name and count == 1) else (f"{name}_{s:04d}" if name else None)
        paths = write_clip(out, s, frames, (height, width), clip_name, fps, n_objects=objects, occluders=occluders)
        for p in (paths.video, paths.coco, paths.ytvis):
            click.echo(str(p))


@click.option("--seed", type=int, required=True, help="Seed of the first clip (clips use seed..seed+count-1).")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
@click.option("--frames", type=int, default=120, show_default=True, help="Frames per clip (>= 1).")
@click.option("--width", type=int, default=640, show_default=True, help="Frame width (multiple of 16, >= 64).")
@click.option("--height", type=int, default=480, show_default=True, help="Frame height (multiple of 16, >= 64).")
@click.option("--name", default=None, help="File stem (default synth_<seed>; with --count > 1: <name>_<seed>).")
@click.option("--count", type=int, default=1, show_default=True, help="Number of clips.")
@click.option("--fps", type=float, default=25.0, show_default=True, help="Frame rate written to the mp4.")
@click.option("--objects", type=int, default=None, help="Shapes per clip (default: seeded 3..8).")
@click.option("--occluders", type=int, default=None, help="Occluder bars per clip (default: seeded 0..2).")
def _synth(seed: int, out: Path, frames: int, width: int, height: int, name: str | None, count: int,
           fps: float, objects: int | None, occluders: int | None) -> None:
    """Write synthetic shapes clips: <name>.mp4, <name>.coco.json, <name>.ytvis.json per seed."""
    _run(seed, out, frames, width, height, name, count, fps, objects, occluders)


synth = click.command("synth")(_synth)
