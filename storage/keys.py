"""Content ids and cache keys: short, stable hex digests."""

from __future__ import annotations

import functools
import hashlib
import os
import json
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def content_id(path: str | Path) -> str:
    """Stable id of a file's bytes (blake2b, 16 hex chars): the `video_id` column.

    Hashing the content, not the name, means a renamed or copied video keeps its
    cached results, and an edited one never reuses stale ones.
    """
    st = os.stat(path)
    return _content_id(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _content_id(path: str, size: int, mtime_ns: int) -> str:
    # Keyed by size and mtime too, so validation and the flow hash a file only once.
    h = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_file(path: str | Path) -> str:
    """Full sha256 hex digest of a file, streamed (model weights digests)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def key_of(*parts: Any) -> str:
    """Digest of JSON-able parts (16 hex chars), independent of dict ordering."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
