"""What segflow does when a part it runs on fails: the output's storage, the Prefect API.

- `output_failed` tells an error a retry cannot fix (disk full, read-only or vanished
  output folder, an object store that refuses or went away) from one that a retry may
  (a GPU hiccup, a flaky read): such errors stop the run at the first range it cannot
  record, are never retried (`retryable`, the tasks' `retry_condition_fn`), so the model
  never runs again for them, and reach the user as one line (`OutputFailed`, exit 1).
- `ApiWatch` watches the Prefect API of a CLI run from a thread of its own. When the API
  goes away mid-run the labeling goes on (task runs need no API), Prefect's event and log
  uploads are dropped instead of retried one by one for minutes at exit, and once the
  run's manifest is written the command exits with one line saying the run's record
  could not be sent (bounded: see README "Faults").
- `abort_on_signals` makes SIGINT (Ctrl-C) and SIGTERM (`timeout`, `kill`, a job
  scheduler) end a `segflow label` within seconds: one line `segflow: aborted`, exit
  130 / 143; the ranges written stay (a rerun resumes after them), no `.tmp` is left.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from typing import Callable

from segflow.errors import OutputFailed, SegflowError
from segflow.storage.atomic import FATAL_ERRNOS, from_object_store
from segflow.storage.fs import is_remote

def output_failed(exc: BaseException, root) -> OutputFailed | None:
    """The one-line `OutputFailed` naming the output folder `root` for an error of a
    label run that no retry can fix, else None (a retry may fix it, or it is not about
    the output: a bad input is reported as that input's failure).

    Counted: `OutputFailed` from a write (`storage.atomic`), an `OSError` of
    `FATAL_ERRNOS` on a path under `root`, any error of an object store's client while
    `root` is in one."""
    if isinstance(exc, OutputFailed):
        reason = exc.reason
    elif isinstance(exc, OSError) and exc.errno in FATAL_ERRNOS and str(exc.filename or "").startswith(str(root)):
        reason = os.strerror(exc.errno)
    elif from_object_store(exc) and is_remote(root):
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
    else:
        return None
    return OutputFailed(f"--out {root}: cannot write to the output folder ({reason}); the ranges written "
                        f"are complete, a rerun resumes after them", reason=reason)


def retryable(task, task_run, state) -> bool:
    """A task's `retry_condition_fn`: retry unless the failure is one no retry can fix (a
    refused input or setting, the output folder or object store failing): a retry of the
    segment task would run the model again for nothing."""
    exc = state.data if isinstance(state.data, BaseException) else state.result(raise_on_failure=False)
    if not isinstance(exc, BaseException):
        return True
    return not (isinstance(exc, SegflowError) or from_object_store(exc)
                or (isinstance(exc, OSError) and exc.errno in FATAL_ERRNOS))


class QuietFailures(logging.Filter):
    """Drops Prefect's tracebacks of failures segflow reports itself in one line: a task
    or flow run failing with a `SegflowError` or an object store's error (its message,
    the traceback, and the "Finished in state Failed" line that repeats it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, SegflowError) or (exc is not None and from_object_store(exc)):
            return False  # an object store that went away: the run's one line names --out
        message = record.getMessage()
        return not any(f"{name}:" in message or f"{name}(" in message for name in _QUIET_NAMES)


_QUIET_NAMES = ("OutputFailed", "InputsFailed", "EndpointConnectionError", "ConnectionClosedError")


def quiet_prefect_failures() -> None:
    """Install `QuietFailures` on Prefect's task- and flow-run loggers, and `_NoDrainNotice`
    on its event and log upload workers (once)."""
    for name in ("prefect.task_runs", "prefect.flow_runs"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, QuietFailures) for f in logger.filters):
            logger.addFilter(QuietFailures())
    for name in ("EventsWorker", "APILogWorker"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoDrainNotice) for f in logger.filters):
            logger.addFilter(_NoDrainNotice())


class _NoDrainNotice(logging.Filter):
    """Drops `WARNING | EventsWorker - Still processing items: 2 items remaining...`: Prefect
    sending its last events at exit, as it should (`segflow review` printed it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Still processing items")


# ---- the Prefect API ------------------------------------------------------------------------

PROBE_EVERY_S = 1.0  # the API's /health is asked this often during a run
PROBE_TIMEOUT_S = 2.0
MISSES = 3  # consecutive failed probes that mean the API went away (~3-9 s)


class _Mute(logging.Filter):
    """Drops Prefect's per-event and per-log upload failures once the API is known gone."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (WATCH is not None and WATCH.lost_at is not None)


class ApiWatch:
    """Probes `url/health` from a daemon thread while a CLI run goes on.

    `lost_at` is set (monotonic seconds) after `MISSES` failed probes in a row. Then
    Prefect's client stops retrying (each retry of a dead API waits 2, 4, ... 32 s),
    its event and log uploads are dropped, and, once `recorded` was told the run's
    manifest is written, `on_lost` is called (the CLI prints its lines and exits).
    """

    def __init__(self, url: str, on_lost: Callable[[str, dict], None]) -> None:
        self.url = url.rstrip("/")
        self.on_lost = on_lost
        self.lost_at: float | None = None
        self.record: tuple[str, dict] | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._fired = False
        self._thread = threading.Thread(target=self._run, name="segflow-api-watch", daemon=True)

    def reachable(self) -> bool:
        import httpx

        try:
            return httpx.get(f"{self.url}/health", timeout=PROBE_TIMEOUT_S).status_code == 200
        except httpx.HTTPError:
            return False

    def start(self) -> "ApiWatch":
        if not self.reachable():
            raise SegflowError(f"the Prefect API at {self.url} does not answer (PREFECT_API_URL): "
                               f"start that server, or unset PREFECT_API_URL for a temporary one")
        for name in ("prefect._internal.concurrency", "prefect.events.clients", "prefect.client"):
            logging.getLogger(name).addFilter(_Mute())
        self._thread.start()
        return self

    def stop(self) -> None:
        """The run is over: a last look, since Prefect's exit hooks would send every event
        still queued to an API that died since the last probe, ~7 s apiece."""
        self._stop.set()
        if self.lost_at is None and not self.reachable():
            self._lose()

    def _lose(self) -> None:
        self.lost_at = time.monotonic()
        _forget_prefect_uploads()
        self._maybe_fire()

    def recorded(self, manifest: str, summary: dict) -> None:
        """The run's labels and manifest are written: exit now if the API is gone."""
        self.record = (manifest, summary)
        self._maybe_fire()

    def _run(self) -> None:
        misses = 0
        while not self._stop.wait(PROBE_EVERY_S):
            misses = 0 if self.reachable() else misses + 1
            if misses >= MISSES and not self._stop.is_set():
                self._lose()
                return

    def _maybe_fire(self) -> None:
        with self._lock:
            if self._fired or self.lost_at is None or self.record is None:
                return
            self._fired = True
        self.on_lost(*self.record)


WATCH: ApiWatch | None = None


def api_lost() -> bool:
    """Whether this process's run watch found the Prefect API gone."""
    return WATCH is not None and WATCH.lost_at is not None


def run_recorded(manifest, summary: dict) -> None:
    """Called by the label flow once its labels and manifest are written."""
    if WATCH is not None:
        WATCH.recorded(str(manifest), summary)


def watch_api(on_lost: Callable[[str, dict], None]) -> ApiWatch | None:
    """Start watching PREFECT_API_URL (none set: Prefect's temporary server, not watched)."""
    global WATCH
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        return None
    WATCH = ApiWatch(url, on_lost).start()
    return WATCH


def _forget_prefect_uploads() -> None:
    """Make Prefect give up on a dead API: no client retries, queued events and log
    batches dropped (Prefect would otherwise send each one at exit, ~7 s apiece)."""
    try:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker
        from prefect.settings import get_current_settings

        get_current_settings().client.max_retries = 0
    except Exception:  # noqa: BLE001 - a Prefect without these parts has nothing to drop
        return

    async def drop(*_args, **_kwargs) -> None:
        return None

    for service in (EventsWorker, APILogWorker):
        for instance in list(getattr(service, "_instances", {}).values()):
            client = getattr(instance, "_client", None)
            if client is not None and hasattr(client, "emit"):
                client.emit = drop
            instance._handle = drop
            if hasattr(instance, "_handle_batch"):
                instance._handle_batch = drop


def exit_now(code: int) -> None:
    """Leave the process at once (Prefect's exit hooks would wait on the dead API)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def api_lost_exit(manifest: str, summary: dict, print_summary: Callable[[dict], None]) -> None:
    """The CLI's end of a run whose Prefect API went away: the summary, one line, exit
    (1 if an input failed, else 0: the labels are complete)."""
    print_summary(summary)
    url = WATCH.url if WATCH is not None else "?"
    # not print(): called from the flow's thread, where Prefect logs prints (log_prints)
    sys.stderr.write(f"segflow: the Prefect API at {url} went away during the run: its record (flow and task "
                     f"runs, logs, artifacts) could not be sent; the labels are complete, manifest: {manifest}\n")
    exit_now(1 if any(r.get("status") == "failed" for r in summary.get("inputs", [])) else 0)


# ---- a worker that dies with its flow run ---------------------------------------------------

ZOMBIE_AUTOMATION = "segflow: crash flow runs that stopped beating"


def crash_silent_flow_runs(within_s: int = 90) -> str:
    """Create (once) the Prefect automation that marks a flow run Crashed when it sends no
    heartbeat for `within_s` seconds: a worker killed with its flow run (machine lost,
    OOM-killed) would otherwise leave the run Running forever. Flow runs send heartbeats
    every PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds (default 180; set 30 on the workers so
    `within_s` can be short). Uses the current PREFECT_API_URL; returns the automation id.
    The next run of the same inputs resumes after the ranges the crashed one wrote."""
    from datetime import timedelta

    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture

    try:
        return str(Automation.read(name=ZOMBIE_AUTOMATION).id)
    except ValueError:
        pass
    ends = ["Completed", "Failed", "Cancelled", "Crashed"]
    automation = Automation(
        name=ZOMBIE_AUTOMATION,
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{s}" for s in ends)},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within_s),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"no heartbeat for {within_s} s: its worker or machine went away")],
    ).create()
    return str(automation.id)


# ---- SIGINT and SIGTERM: abort at once ------------------------------------------------------

ABORT_WAIT_S = 3.0  # at most this long telling the Prefect API the run crashed


def abort_on_signals() -> None:
    """Make SIGINT and SIGTERM end this CLI process within seconds (`_abort`).

    Without this, Prefect turns SIGTERM into an exception in the main thread, then waits
    for the running task threads to finish their ranges and for its temporary server
    (killed by the same signal, sent to the process group) to take the run's last events:
    minutes of work, a wall of tracebacks, exit 1. Ctrl-C took ~25 s the same way.
    Prefect installs its own SIGTERM handler for a flow run's duration
    (`prefect.utilities.engine.capture_sigterm`, the module's `_prefect_sigterm_handler`):
    it is pointed at `_abort` as well once Prefect is imported (so call this again before
    the flow runs). Main thread only (signal handlers live there)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        _SAVED.setdefault(sig, signal.signal(sig, _abort))
    engine = sys.modules.get("prefect.utilities.engine")  # not imported: called again once it is
    if engine is not None and hasattr(engine, "_prefect_sigterm_handler"):
        _SAVED.setdefault("prefect", engine._prefect_sigterm_handler)
        engine._prefect_sigterm_handler = _abort


_SAVED: dict = {}  # the handlers `abort_on_signals` replaced


def restore_signals() -> None:
    """Put back what `abort_on_signals` replaced (`main` called in-process: tests, scripts)."""
    for key, handler in list(_SAVED.items()):
        if key == "prefect":
            sys.modules["prefect.utilities.engine"]._prefect_sigterm_handler = handler
        else:
            signal.signal(key, handler)
    _SAVED.clear()


_ABORTING = False


def _abort(signum: int, frame) -> None:
    """Kill the temporary Prefect server this process started (else tell the API the
    flow run crashed, bounded), say `segflow: aborted`, remove the temporary files of the
    writes under way and exit 128 + `signum`. A second signal exits at once.

    Every label file and cache file is written atomically (temp file + rename), so the
    ranges finished before the signal are whole and a rerun resumes after them."""
    global _ABORTING
    if _ABORTING:
        os._exit(128 + signum)
    _ABORTING = True
    if not _kill_temporary_server():  # its run history goes with it; else the API is told
        _crash_flow_run(signal.Signals(signum).name)
    sys.stderr.write("segflow: aborted\n")
    from segflow.storage.atomic import discard_in_flight

    discard_in_flight()
    exit_now(128 + signum)


def _crash_flow_run(signame: str) -> None:
    """Mark the flow run under way Crashed in its API, waiting at most `ABORT_WAIT_S`
    (the API may have died with the same signal)."""
    if "prefect" not in sys.modules:
        return
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()  # the signal handler runs in the main thread, inside the run
    flow_run = getattr(ctx, "flow_run", None) if ctx is not None else None
    if flow_run is None or api_lost():
        return

    def send() -> None:
        try:
            from prefect.client.orchestration import get_client
            from prefect.states import Crashed

            with get_client(sync_client=True) as client:
                client.set_flow_run_state(flow_run.id, Crashed(message=f"segflow aborted by {signame}"), force=True)
        except Exception:  # noqa: BLE001 - the API may be gone: the run stays Running there
            pass

    sender = threading.Thread(target=send, name="segflow-abort", daemon=True)
    sender.start()
    sender.join(ABORT_WAIT_S)


def _kill_temporary_server() -> bool:
    """Kill Prefect's temporary server if this process started one; whether it did.

    SIGKILL, not SIGTERM: the server got the same SIGTERM when it was sent to the process
    group, and shuts down printing tracebacks (its pending events cancelled) into this
    command's stderr; sent to this process alone, the server would outlive it. SQLite
    keeps its database whole either way."""
    server_module = sys.modules.get("prefect.server.api.server")
    if server_module is None:
        return False
    killed = False
    for server in list(getattr(server_module.SubprocessASGIServer, "_instances", {}).values()):
        process = getattr(server, "server_process", None)
        if process is None:
            continue
        killed = True
        if process.poll() is None:
            process.kill()
            try:
                process.wait(timeout=2)
            except Exception:  # noqa: BLE001 - subprocess.TimeoutExpired: gone with us anyway
                pass
    return killed
