"""The label flow's bookkeeping: which ranges go to one task, which need none."""

from __future__ import annotations

from segflow.board import Board, Ready, Stage, add_ranges, output_of


def recorder():
    """A task `submit` that records the ranges it is given and is done at once."""
    calls: list[list[int]] = []

    def submit(ii):
        calls.append(ii)
        return Ready([f"out{i}" for i in ii])
    return calls, submit


def test_consecutive_misses_share_a_task_and_hits_need_none():
    upstream, stage = Stage(Board()), Stage(Board())
    for i in range(7):
        upstream.add(Ready(f"raw{i}"))
    cached = {2: "hit2", 5: "hit5"}
    calls, submit = recorder()

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
    calls, submit = recorder()

    model_task = {0: "a", 1: "b", 2: None, 3: None, 4: "c"}  # ranges 2 and 3 came from the cache
    together = lambda i, j: model_task[i] == model_task[j]  # noqa: E731
    add_ranges(stage, stage.ready(upstream, 5), lambda i: None, submit, together, tasks=3)
    assert calls == [[0], [1], [2, 3]] and len(stage) == 4  # range 4 waits for a free slot
    add_ranges(stage, stage.ready(upstream, 5), lambda i: None, submit, together, tasks=0)
    assert len(stage) == 4
    add_ranges(stage, stage.ready(upstream, 5), lambda i: None, submit, together, tasks=1)
    assert calls[-1] == [4] and len(stage) == 5


def test_ranges_the_model_made_in_one_task_go_on_together():
    upstream, stage = Stage(Board()), Stage(Board())
    for i in range(6):
        upstream.add(Ready(i))
    calls, submit = recorder()

    model_task = {0: "a", 1: "a", 2: "a", 3: "b", 4: "b", 5: None}  # images: three, then two per model task
    add_ranges(stage, stage.ready(upstream, 99), lambda i: None, submit, lambda i, j: model_task[i] == model_task[j])
    assert calls == [[0, 1, 2], [3, 4], [5]]


def test_ready_takes_as_many_frames_as_fit():
    upstream, stage = Stage(Board()), Stage(Board())
    frames = [64, 64, 64, 64, 10, 1, 1]
    for i in range(len(frames)):
        upstream.add(Ready(i))
    cost = frames.__getitem__
    assert stage.ready(upstream, 128, cost) == [0, 1]
    assert stage.ready(upstream, 0, cost) == []  # no room: nothing
    assert stage.ready(upstream, 10, cost) == [0]  # a range bigger than the room goes alone
    for i in range(4):
        stage.add(Ready(i))
    assert stage.ready(upstream, 12, cost) == [4, 5, 6]


def test_the_scheduler_keys_and_probes_each_range_once_per_stage(clip, tmp_path, monkeypatch):
    """Each stage's key and cache probe run once per range (the flow and the tasks used
    to compute them again); an up-to-date input is probed at its label files only, before
    any flow run."""
    from collections import Counter
    from dataclasses import replace

    import segflow.flows.label as label
    from segflow.cli import run_label

    calls: Counter = Counter()

    def counting(spec):
        def key(config, work):
            calls["key", spec.name, work.rng.start] += 1
            return spec.key(config, work)

        def cached(config, work):
            calls["cached", spec.name, work.rng.start] += 1
            return spec.cached(config, work)

        return replace(spec, key=key, cached=cached)

    monkeypatch.setattr(label, "LABEL", replace(label.LABEL, stages=tuple(map(counting, label.LABEL.stages))))
    settings = dict(model="test-color", frames_per_range=5)  # the 12-frame clip: 3 ranges
    for change in ({}, {"confidence": 0.8}):
        calls.clear()
        run_label([str(clip)], str(tmp_path / "out"), **settings, **change)
        # (the first range's label file also once before the flow: `served_by_cache` stops at its miss)
        assert calls.pop(("key", "labels", 0)) == calls.pop(("cached", "labels", 0)) == 2, calls
        assert len(calls) == 2 * 5 * 3 - 2 and set(calls.values()) == {1}, calls
    calls.clear()
    assert run_label([str(clip)], str(tmp_path / "out"), **settings, confidence=0.8)["inputs"][0]["up_to_date"]
    assert calls == Counter({(what, "labels", start): 1 for what in ("key", "cached") for start in (0, 5, 10)})
