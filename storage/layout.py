"""Where every file of an output folder lives.

    OUT/<video_id>/frames_<start>_<end>.parquet    the label table, one file per range
    OUT/.segflow/manifest.json                      the last run of each input
    OUT/.segflow/cache/<stage>/<video_id>/*.pq      cached stage outputs (Parquet)

The cache is hidden and uses `.pq`, so `pandas.read_parquet(OUT)` and a DuckDB glob
`OUT/**/*.parquet` see the label table only.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from segflow.errors import SegflowError
from segflow.storage.fs import as_path, is_remote, num_rows
from segflow.contracts import FrameRange

HIDDEN = ".segflow"


@dataclass(frozen=True)
class Layout:
    root: Path  # or a UPath for an object store

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


def remove_stale_labels(layout: Layout, video_id: str, ranges: list[FrameRange]) -> int:
    """Delete an input's label files from earlier plans (other ranges); returns how many."""
    keep = {layout.labels(video_id, r).name for r in ranges}
    stale = [p for p in layout.video_dir(video_id).glob("*.parquet") if p.name not in keep]
    for p in stale:
        p.unlink()
    return len(stale)


def count_label_rows(layout: Layout, video_id: str, ranges: list[FrameRange]) -> int:
    """Instances in an input's label files (read from the Parquet footers only)."""
    paths = [layout.labels(video_id, r) for r in ranges]
    return sum(num_rows(p) for p in paths if p.exists())


def check_writable(out: str | Path) -> Layout:
    """The layout of an output folder, refusing one that cannot be written (writes nothing)."""
    root = as_path(out)
    if is_remote(root):
        bucket = as_path(f"{root.protocol}://{root.parts[0].rstrip('/')}") if root.parts else root
        try:
            reachable = bucket.exists()
        except Exception as exc:  # credentials, endpoint, network
            raise SegflowError(f"--out {out}: object store not reachable ({type(exc).__name__}: {exc})") from None
        if not reachable:
            raise SegflowError(f"--out {out}: bucket does not exist")
        return Layout(root)
    check_folder_writable(root, f"--out {out}")
    return Layout(root)


def check_folder_writable(path: Path, what: str) -> None:
    """Refuse a local folder that could not be created or written (leaves nothing): the
    nearest existing ancestor must be a folder where a folder can be made (one is made
    and removed again)."""
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise SegflowError(f"{what}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise SegflowError(f"{what}: folder {probe} is not writable")
    try:  # access() trusts permission bits; root passes it for /proc, a read-only bind mount...
        os.rmdir(tempfile.mkdtemp(prefix=".segflow-probe-", dir=probe))
    except OSError as exc:
        raise SegflowError(f"{what}: folder {probe} is not writable ({exc.strerror})") from None
