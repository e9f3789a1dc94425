"""Where every file of an output folder lives.

    OUT/<video_id>/frames_<start>_<end>.parquet    the label table, one file per range
    OUT/.segflow/manifest.json                      the last run of each input
    OUT/.segflow/cache/<stage>/<video_id>/*.pq      cached stage outputs (Parquet)

The cache is hidden and uses `.pq`, so `pandas.read_parquet(OUT)` and a DuckDB glob
`OUT/**/*.parquet` see the label table only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from segflow.errors import SegflowError
from segflow.tasks.contracts import FrameRange

HIDDEN = ".segflow"


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def meta_dir(self) -> Path:
        return self.root / HIDDEN

    @property
    def manifest(self) -> Path:
        return self.meta_dir / "manifest.json"

    def video_dir(self, video_id: str) -> Path:
        return self.root / video_id

    def labels(self, video_id: str, rng: FrameRange) -> Path:
        return self.video_dir(video_id) / f"{rng.name}.parquet"

    def cache(self, stage: str, video_id: str, rng: FrameRange, key: str) -> Path:
        return self.meta_dir / "cache" / stage / video_id / f"{rng.name}_{key}.pq"


def check_writable(out: str | Path) -> Layout:
    """The layout of an output folder, refusing one that cannot be written (writes nothing)."""
    root = Path(out).expanduser().resolve()
    probe = root
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise SegflowError(f"--out {out}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise SegflowError(f"--out {out}: folder {probe} is not writable")
    return Layout(root)
