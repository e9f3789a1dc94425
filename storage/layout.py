"""Where every file of an output folder lives.

    OUT/<video_id>/frames_<start>_<end>.parquet    the label table of a video, one file per range
    OUT/shards/<shard_id>.parquet                   the label table of images, one file per shard
    OUT/.segflow/manifest.json                      the last run of each input
    OUT/.segflow/cache/<stage>/<video_id>/*.pq      cached stage outputs of a video (Parquet)
    OUT/.segflow/cache/<stage>/shards/<shard_id>_<key>.pq   ... of a shard of images

The cache is hidden and uses `.pq`, so `pandas.read_parquet(OUT)` and a DuckDB glob
`OUT/**/*.parquet` see the label table only.
"""

from __future__ import annotations

import errno
import functools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from segflow.errors import SegflowError
from segflow.storage.fs import as_path, is_remote, num_rows, read_table
from segflow.contracts import FrameRange, VideoInfo
from segflow.storage.table import LABEL_POLYGONS_KEY, labels_meta, write_labels

HIDDEN = ".segflow"
SHARDS = "shards"  # the folder of image shards' label files (and of their cache files per stage)


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

    @property
    def cache_dir(self) -> Path:
        return self.meta_dir / "cache"

    @property
    def shard_dir(self) -> Path:
        return self.root / SHARDS

    def label_file(self, video: VideoInfo, rng: FrameRange) -> Path:
        """The label file of a video's range, or of a shard of images (one per shard)."""
        if video.kind == "shard":
            return self.shard_dir / f"{video.video_id}.parquet"
        return self.labels(video.video_id, rng)

    def stage_file(self, stage: str, video: VideoInfo, rng: FrameRange, key: str) -> Path:
        """Where a stage caches its output of a video's range, or of a shard (one file per key)."""
        if video.kind == "shard":
            return self.cache_dir / stage / SHARDS / f"{video.video_id}_{key}.pq"
        return self.cache(stage, video.video_id, rng, key)


def remove_stale_labels(layout: Layout, video_id: str, ranges: list[FrameRange]) -> int:
    """Delete a video's label files from earlier plans (other ranges); returns how many."""
    keep = {layout.labels(video_id, r).name for r in ranges}
    stale = [p for p in layout.video_dir(video_id).glob("*.parquet") if p.name not in keep]
    for p in stale:
        p.unlink()
    return len(stale)


def remove_stale_shards(layout: Layout, shards: list[VideoInfo]) -> list[str]:
    """Keep each image in one label file: take the images of `shards` out of every other
    label file holding them (from an earlier cut: images added, the same image read from
    another folder, or labeled one by one after a failure). A shard file left with no
    image is deleted, another rewritten without them; an image's own folder of the
    layout before shards (`OUT/<video_id>/`) loses its label files. Returns the ids of
    the shards whose label files were deleted."""
    mine = {layout.label_file(s, FrameRange(0, 0)).name for s in shards}
    ids = {m.video_id for s in shards for m in s.members}
    gone = []
    try:
        files = [p for p in layout.shard_dir.glob("*.parquet") if p.name not in mine]
        folders = [p for p in layout.root.iterdir() if p.name in ids]
    except (OSError, NotImplementedError):
        files, folders = [], []
    for p in files:
        if ids.isdisjoint(_members_of(p)):
            continue
        meta = labels_meta(p) or {}
        held = [m for m in meta.get("members") or () if m[0] in ids]
        if not held:
            continue
        if len(held) == len(meta["members"]):
            p.unlink(missing_ok=True)
            gone.append(p.stem)
            continue
        table = read_table(p)
        keep = pc.invert(pc.is_in(table["video_id"], pa.array(sorted(ids))))
        meta["members"] = [m for m in meta["members"] if m[0] not in ids]
        meta.pop(LABEL_POLYGONS_KEY, None)  # its rows' raw positions: of the rows it held (not reused now)
        write_labels(table.filter(keep).to_pydict(), p, meta)
    for folder in folders:
        for p in folder.glob("frames_*.parquet"):
            p.unlink(missing_ok=True)
    return gone


def _members_of(path) -> frozenset[str]:
    """The video_ids a shard's label file holds (its footer read once per version of a
    local file: a run asks this of every shard file for each group it labels)."""
    if is_remote(path):
        return frozenset(str(m[0]) for m in (labels_meta(path) or {}).get("members") or ())
    try:
        st = os.stat(path)
    except OSError:
        return frozenset()
    return _members_cached(str(path), st.st_size, st.st_mtime_ns, st.st_ino)


@functools.lru_cache(maxsize=16384)
def _members_cached(path: str, size: int, mtime_ns: int, inode: int) -> frozenset[str]:
    return frozenset(str(m[0]) for m in (labels_meta(Path(path)) or {}).get("members") or ())


def label_files(root) -> list:
    """The label table's Parquet files under an output folder (the hidden cache excluded)."""
    try:
        files = [p for p in root.glob("*/*.parquet") if p.parent.name != HIDDEN]
    except (OSError, ValueError):
        return []
    return sorted(files, key=str)


def count_shard_rows(layout: Layout, shard: VideoInfo) -> dict[str, int]:
    """video_id -> instances of each image in a shard's label file (none if it is missing)."""
    path = layout.label_file(shard, FrameRange(0, 0))
    if not path.exists():
        return {}
    counts = pc.value_counts(read_table(path, ["video_id"])["video_id"]).to_pylist()
    return {str(c["values"]): int(c["counts"]) for c in counts}


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
    and removed again). The error line names `what` (`--out DIR`) and the cause:
    `--out /proc/x: cannot create the folder: /proc does not allow new folders`."""
    probe = path
    while not probe.exists():
        probe = probe.parent
    doing = "write in the folder" if probe == path else "create the folder"
    if not probe.is_dir():
        raise SegflowError(f"{what}: cannot {doing}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise SegflowError(f"{what}: cannot {doing}: no permission to write in {probe}")
    try:  # access() trusts permission bits; root passes it for /proc, a read-only bind mount...
        os.rmdir(tempfile.mkdtemp(prefix=".segflow-probe-", dir=probe))
    except OSError as exc:
        raise SegflowError(f"{what}: cannot {doing}: {_why_unwritable(probe, exc)}") from None


def _why_unwritable(folder: Path, exc: OSError) -> str:
    """Why no folder could be made in an existing `folder`, in words (the OS's own
    `No such file or directory` for /proc reads as if the folder were missing)."""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"no permission to write in {folder}"
    if exc.errno == errno.EROFS:
        return f"{folder} is on a read-only file system"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left in {folder}"
    if exc.errno == errno.ENOENT:  # the folder exists: a virtual file system (/proc, /sys)
        return f"{folder} does not allow new folders"
    return f"{folder} refuses new folders ({exc.strerror})"
