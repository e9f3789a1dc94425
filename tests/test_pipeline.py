"""The label flow's bookkeeping: which ranges go to one task, which need none."""

from __future__ import annotations

from segflow.pipeline import Board, Ready, Stage, add_ranges, output_of


def test_consecutive_misses_share_a_task_and_hits_need_none():
    upstream, stage = Stage(Board()), Stage(Board())
    for i in range(7):
        upstream.add(Ready(f"raw{i}"))
    cached = {2: "hit2", 5: "hit5"}
    calls = []

    def submit(ii):
        calls.append(ii)
        return Ready([f"out{i}" for i in ii])

    todo = stage.ready(upstream, 6)
    assert todo == [0, 1, 2, 3, 4, 5]
    add_ranges(stage, todo, cached.get, submit)
    assert calls == [[0, 1], [3, 4]]
    assert [output_of(stage, i) for i in range(6)] == ["out0", "out1", "hit2", "out3", "out4", "hit5"]
    assert stage.ready(upstream, 6) == [6]  # what is left upstream, in order


def test_ranges_the_model_just_made_go_alone_within_the_task_slots():
    upstream, stage = Stage(Board()), Stage(Board())
    for i in range(5):
        upstream.add(Ready(i))
    calls = []

    def submit(ii):
        calls.append(ii)
        return Ready([f"out{i}" for i in ii])

    segmented = {0, 1, 4}.__contains__  # ranges 2 and 3 came from the cache
    add_ranges(stage, stage.ready(upstream, 5), lambda i: None, submit, segmented, tasks=3)
    assert calls == [[0], [1], [2, 3]] and len(stage) == 4  # range 4 waits for a free slot
    add_ranges(stage, stage.ready(upstream, 5), lambda i: None, submit, segmented, tasks=0)
    assert len(stage) == 4
    add_ranges(stage, stage.ready(upstream, 5), lambda i: None, submit, segmented, tasks=1)
    assert calls[-1] == [4] and len(stage) == 5
