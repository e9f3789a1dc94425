"""Bookkeeping of frame ranges as they move through the stages (used by `segflow.pipeline`).

The scheduler submits each range's next stage as soon as its inputs are done; these
small classes tell it what is done (without asking Prefect's API), what is in flight,
and wake it when any task finishes (Prefect futures' done callbacks).
"""

from __future__ import annotations

import threading


class Ready:
    """A stage output found in the cache, standing in for a finished future."""

    def __init__(self, value) -> None:
        self.value = value

    def wait(self) -> None:
        return None

    def result(self):
        return self.value


class Board:
    """Wakes the flow when any task it was handed finishes, and notes failures."""

    def __init__(self) -> None:
        self._changed = threading.Event()
        self.failed = False

    def watch(self, handle) -> None:
        if not isinstance(handle, Ready):
            handle.add_done_callback(lambda _: self._changed.set())

    def arm(self) -> None:
        """Forget earlier wake-ups; call before looking at the stages."""
        self._changed.clear()

    def wait(self) -> None:
        """Until a task finishes (at once if one did since `arm`)."""
        self._changed.wait()


class Stage:
    """One stage's tasks for a video's ranges, in range order."""

    def __init__(self, board: Board) -> None:
        self.handles: list = []
        self.offsets: list = []  # position of each range in its task's result list (None: not a list)
        self._board = board
        self._settled = 0  # handles[:_settled] are finished and were checked
        self._results: dict[int, object] = {}  # a finished task's result by handle id (asking Prefect costs ~0.4 ms)

    def add(self, handle, ranges: int | None = None) -> None:
        """The next range's task, or one task for the next `ranges` ranges (returning a list)."""
        self.offsets += [None] if ranges is None else range(ranges)
        self.handles += [handle] * (1 if ranges is None else ranges)
        self._board.watch(handle)

    def __len__(self) -> int:
        return len(self.handles)

    def __getitem__(self, i: int):
        return self.handles[i]

    def ready(self, upstream: "Stage", most: float, cost=lambda i: 1) -> list[int]:
        """The next ranges whose `upstream` output is done, as many as fit in `most` (each
        range costing `cost(i)`; one that alone costs more is taken alone)."""
        todo: list[int] = []
        spent = 0
        while upstream.done(i := len(self) + len(todo)):
            spent += cost(i)
            if most <= 0 or (todo and spent > most):
                break
            todo.append(i)
        return todo

    def done(self, i: int) -> bool:
        """Whether range i's task finished and completed (a failure stops the flow)."""
        return i < self._advance()

    def in_flight(self) -> int:
        """Ranges submitted and not finished."""
        settled = self._advance()
        return sum(not _finished(h) for h in self.handles[settled:])

    def tasks_in_flight(self) -> int:
        """Tasks submitted and not finished (a task may do several ranges)."""
        settled = self._advance()
        return len({id(h) for h in self.handles[settled:] if not _finished(h)})

    def _advance(self) -> int:
        # Tasks mostly finish in range order: only the few past the settled prefix are looked at.
        while self._settled < len(self.handles) and _finished(self.handles[self._settled]):
            h = self.handles[self._settled]
            if not isinstance(h, Ready):
                h.wait()  # its final state is then known here, without asking the API
                if not h.state.is_completed():
                    self._board.failed = True
                    break
            self._settled += 1
        return self._settled

    def wait_all(self) -> None:
        for h in {id(h): h for h in self.handles}.values():
            h.wait()

    def raise_first_failure(self) -> None:
        for i in range(len(self)):
            self.result(i)

    def result(self, i: int):
        """The result of range i's task (finished), kept once asked for."""
        h = self.handles[i]
        if isinstance(h, Ready):
            return h.value
        if id(h) not in self._results:
            self._results[id(h)] = h.result()
        return self._results[id(h)]


class WholeInput:
    """Stands in for `stage` where the next stage looks (`Stage.ready`): range i counts as
    done once range `last[i]` (its input's last range) is done."""

    def __init__(self, stage: Stage, last: list[int]) -> None:
        self.stage, self.last = stage, last

    def done(self, i: int) -> bool:
        return i < len(self.last) and self.stage.done(self.last[i])


def add_ranges(
    stage: Stage, todo: list[int], cached, submit, together=lambda i, j: True, tasks: int | None = None
) -> None:
    """Add ranges `todo` (consecutive, their inputs done) to `stage`: each output found by
    `cached(i)` as `Ready`, each run of consecutive misses as one task, `submit(list of i)`
    (a task run costs Prefect ~10 ms: on a rerun, one does all the ranges at once). Two
    neighbours share a task only if `together(i, i + 1)`; at most `tasks` tasks are
    started (the ranges after are left for later)."""
    misses: list[int] = []
    started = 0
    for i in todo:
        hit = cached(i)
        if misses and (hit is not None or not together(misses[-1], i)):
            stage.add(submit(misses), len(misses))
            misses, started = [], started + 1
        if hit is not None:
            stage.add(Ready(hit))
            continue
        if not misses and started == tasks:
            return
        misses.append(i)
    if misses:
        stage.add(submit(misses), len(misses))


def output_of(stage: Stage, i: int):
    """Range i's output of a finished stage (its task may have done several ranges)."""
    out = stage.result(i)
    return out if stage.offsets[i] is None else out[stage.offsets[i]]


def outputs_of(stage: Stage, ii: list[int]) -> list:
    """The outputs of ranges `ii` (done): what the next stage's task is given."""
    return [output_of(stage, i) for i in ii]


def runs_of(stage: Stage, ii: list[int]) -> list:
    """The task runs that made ranges `ii` of `stage` (none for a cached output), for the
    next stage's `wait_for`: they are done already, so it waits for nothing, but the
    Prefect UI draws the edge from them (outputs are handed on as values, not futures)."""
    return list({id(h): h for h in (stage.handles[i] for i in ii) if not isinstance(h, Ready)}.values())


def _finished(handle) -> bool:
    return isinstance(handle, Ready) or handle.wrapped_future.done()
