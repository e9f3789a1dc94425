"""Shards: an image dataset's images grouped into the unit the pipeline works in.

A shard is a fixed group of images labeled and stored together: one label file
(`OUT/shards/<shard_id>.parquet`) and one cache file per stage, each holding every
member's rows (told apart by `video_id`; in the cache, frame i is member i). The
scheduler sees a shard as one input of one frame range (`VideoInfo(kind="shard")`).

Members are the images in source order, cut into shards where an image's content
digest says so (content-defined chunking: after at least half the target size, an
image ends its shard with probability 1 / (the other half); at most twice the target).
A cut depends only on the images before it back to the previous cut, so adding images
to a labeled folder changes only the shards they fall into (appended names: the last
one or two), never reshuffles the others. The shard id is a digest of its members'
content digests, so the same images give the same shard wherever they are read from.
"""

from __future__ import annotations

import math

from segflow.contracts import VideoInfo
from segflow.storage.keys import key_of


def shard_sizes(target: int) -> tuple[int, int, int]:
    """(least, cut modulus, most) members of a shard averaging about `target` images."""
    least = max(1, math.ceil(target / 2))
    return least, max(1, target - least + 1), max(1, 2 * target)


def cut_after(video_id: str, size: int, target: int) -> bool:
    """Whether a shard of `size` images so far ends after the image `video_id` (its
    content digest, hex): the content-defined cut of `cut_into_shards`."""
    least, modulus, most = shard_sizes(target)
    return size >= most or (size >= least and int(video_id[-8:], 16) % modulus == 0)


def cut_into_shards(images: list[VideoInfo], target: int) -> list[list[VideoInfo]]:
    """Images (kind "image", distinct content) -> their shards' members, in source order."""
    shards: list[list[VideoInfo]] = []
    current: list[VideoInfo] = []
    for image in sorted(images, key=lambda v: v.source):
        current.append(image)
        if cut_after(image.video_id, len(current), target):
            shards.append(current)
            current = []
    if current:
        shards.append(current)
    return shards


def shard_id(members: list[VideoInfo] | tuple[VideoInfo, ...]) -> str:
    """A shard's id: a digest of its members' content digests, in order (16 hex chars)."""
    return key_of("shard", [m.video_id for m in members])


def make_shard(members: list[VideoInfo] | tuple[VideoInfo, ...]) -> VideoInfo:
    """The shard of these images as the pipeline's input: frame i is `members[i]`."""
    members = tuple(members)
    first = members[0].source
    source = first if len(members) == 1 else f"{first} and {len(members) - 1} more image(s)"
    return VideoInfo(source, shard_id(members), "shard", len(members), 0, 0, 0.0, members=members)


def shards_of(images: list[VideoInfo], target: int) -> list[VideoInfo]:
    """`make_shard` of each of `cut_into_shards(images, target)`."""
    return [make_shard(m) for m in cut_into_shards(images, target)]
