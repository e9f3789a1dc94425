"""Progress of a label run, reported per frame range to any number of listeners.

A listener is any object with three callbacks:

    on_start(total: int)        # frames the run will go through
    on_range_done(frames: int)  # a frame range of that many frames is done
    on_finish()

`ProgressBar` draws one on stderr (only when stderr is a terminal);
`segflow.artifacts.ProgressArtifact` mirrors it in the Prefect UI. `Fanout` sends each
callback to several listeners. The CLI attaches its bar around a run with
`attach(...)`; the flow, running in the same process, picks it up with `attached()`.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from contextlib import contextmanager
from typing import IO, Protocol, TypeVar

T = TypeVar("T", bound=Sized)


class ProgressListener(Protocol):
    """What a progress listener implements."""

    def on_start(self, total: int) -> None: ...

    def on_range_done(self, frames: int) -> None: ...

    def on_finish(self) -> None: ...


class ProgressBar:
    """`[#######-----]  120/500 frames  34.2 frames/s  ETA 0:00:11` on one redrawn line.

    Draws only when `stream` (stderr by default) is a TTY, so logs, pipes and CI output
    stay clean; `enabled` forces it on or off.
    """

    def __init__(self, total: int = 0, stream: IO[str] | None = None, enabled: bool | None = None,
                 width: int = 28, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _isatty(self.stream) if enabled is None else enabled
        self.width = width
        self.clock = clock
        self.total = max(int(total), 0)
        self.done = 0
        self.started = clock()
        self._drawn = False

    def on_start(self, total: int) -> None:
        """Begin (or restart) counting towards `total` frames."""
        self.total, self.done, self.started = max(int(total), 0), 0, self.clock()
        self._draw()

    def on_range_done(self, frames: int) -> None:
        """Count a finished range of `frames` frames and redraw."""
        self.done += max(int(frames), 0)
        self._draw()

    def on_finish(self) -> None:
        """Draw the final state and end the line."""
        self._draw()
        if self.enabled and self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def render(self) -> str:
        """The bar as text (what is drawn)."""
        total = max(self.total, self.done)
        frac = self.done / total if total else 1.0
        filled = int(round(frac * self.width))
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = self.done / elapsed
        eta = (total - self.done) / rate if rate > 0 else None
        return (
            f"[{'#' * filled}{'-' * (self.width - filled)}] {self.done:>{len(str(total))}}/{total} frames"
            f"  {rate:6.1f} frames/s  ETA {_clock_text(eta)}"
        )

    def _draw(self) -> None:
        if not self.enabled:
            return
        self.stream.write("\r\x1b[K" + self.render())
        self.stream.flush()
        self._drawn = True


def _clock_text(seconds: float | None) -> str:
    if seconds is None:
        return "--:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or not a file
        return False


class Fanout:
    """Sends every progress callback to each of its listeners."""

    def __init__(self, listeners: Iterable[ProgressListener] = ()) -> None:
        self.listeners = list(listeners)

    def on_start(self, total: int) -> None:
        """Forward `on_start` to every listener."""
        for listener in self.listeners:
            listener.on_start(total)

    def on_range_done(self, frames: int) -> None:
        """Forward `on_range_done` to every listener."""
        for listener in self.listeners:
            listener.on_range_done(frames)

    def on_finish(self) -> None:
        """Forward `on_finish` to every listener."""
        for listener in self.listeners:
            listener.on_finish()

    def track(self, ranges: Iterable[T]) -> Iterator[T]:
        """Yield each range; report it done (its `len`) once the caller asks for the next one.

        So `[segment_task(job, video, r) for r in progress.track(ranges)]` reports each
        range right after its task returned.
        """
        for rng in ranges:
            yield rng
            self.on_range_done(len(rng))


NO_PROGRESS = Fanout()  # the default: report to nobody

_ATTACHED: list[ProgressListener] = []
_LOCK = threading.Lock()


@contextmanager
def attach(*listeners: ProgressListener) -> Iterator[None]:
    """Make `listeners` hear the progress of flows run in this process, for the `with` block."""
    with _LOCK:
        _ATTACHED.extend(listeners)
    try:
        yield
    finally:
        with _LOCK:
            for listener in listeners:
                _ATTACHED.remove(listener)


def attached() -> list[ProgressListener]:
    """The listeners attached right now (empty when the flow runs in a worker)."""
    with _LOCK:
        return list(_ATTACHED)
