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
