"""How images are cut into shards (segflow/shards.py): deterministic, about the target size,
and stable when images are added (only the shards they fall into change)."""

from __future__ import annotations

import hashlib

from segflow.contracts import VideoInfo
from segflow.shards import cut_into_shards, make_shard, shard_sizes, shards_of


def images(names) -> list[VideoInfo]:
    return [VideoInfo(f"/data/{n}.jpg", hashlib.blake2b(n.encode(), digest_size=8).hexdigest(), "image", 1, 160, 120,
                      0.0) for n in names]


def members(shards) -> set[tuple[str, ...]]:
    return {tuple(v.video_id for v in s) for s in shards}


def test_shards_are_about_the_target_size_and_cover_each_image_once():
    data = images(f"{i:05d}" for i in range(5000))
    shards = cut_into_shards(list(reversed(data)), 256)  # the order given does not matter: source order
    assert [v for s in shards for v in s] == sorted(data, key=lambda v: v.source)
    least, _, most = shard_sizes(256)
    assert all(least <= len(s) <= most for s in shards[:-1]) and 1 <= len(shards[-1]) <= most
    assert 150 < 5000 / len(shards) < 400
    assert members(cut_into_shards(data, 256)) == members(shards)


def test_added_images_change_only_the_shards_they_fall_into():
    data = images(f"{i:05d}" for i in range(10_000))
    before = members(cut_into_shards(data, 256))
    appended = members(cut_into_shards(data + images(f"{i:05d}" for i in range(10_000, 10_010)), 256))
    assert len(appended - before) <= 2 and len(before - appended) <= 2  # the last shard, perhaps split
    # Ten images sorting in among the others: each changes its shard and, where that one was cut at
    # the largest size, the next one up to its content-defined cut (14 of 37 here).
    inserted = members(cut_into_shards(data + images(f"{i:05d}x" for i in range(0, 10_000, 1000)), 256))
    assert len(inserted - before) <= 2 * 10 and len(before & inserted) >= len(before) - 2 * 10


def test_a_shard_is_one_input_named_by_its_members_content():
    data = images(["a", "b", "c"])
    shard = make_shard(data)
    assert shard.kind == "shard" and shard.frame_count == 3 and shard.inputs == tuple(data)
    assert shard.video_id == make_shard(images(["a", "b", "c"])).video_id != make_shard(data[:2]).video_id
    assert [s.members for s in shards_of(data, 1)] == [(d,) for d in data]  # one image per shard
    assert data[0].inputs == (data[0],)
