"""`segflow server stop` returns only once the server's every process is gone (no Prefect
server needed: a process group shaped like one, a leader and a worker)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from segflow.server import _group_alive, _stop_pid

# The leader dies at once on SIGTERM; its worker (same group) takes `delay` s to exit,
# or ignores SIGTERM altogether ("ignore") and needs SIGKILL.
LEADER = """
import subprocess, sys, time
worker = subprocess.Popen([sys.executable, "-c", sys.argv[2]])
open(sys.argv[1], "w").write(str(worker.pid))
time.sleep(60)
"""
WORKER = """
import signal, sys, time
mode = {mode!r}
signal.signal(signal.SIGTERM, signal.SIG_IGN if mode == "ignore" else lambda *_: (time.sleep({delay}), sys.exit(0)))
time.sleep(60)
"""


def start_group(tmp_path: Path, mode: str, delay: float = 0.0) -> tuple[subprocess.Popen, int]:
    pidfile = tmp_path / "worker.pid"
    leader = subprocess.Popen([sys.executable, "-c", LEADER, str(pidfile), WORKER.format(mode=mode, delay=delay)],
                              start_new_session=True)
    deadline = time.monotonic() + 20
    while not (pidfile.exists() and pidfile.read_text()):
        assert time.monotonic() < deadline, "the worker did not start"
        time.sleep(0.05)
    time.sleep(0.3)  # the worker has set its SIGTERM handler
    return leader, int(pidfile.read_text())


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_stop_waits_for_a_worker_that_outlives_the_leader(tmp_path):
    leader, worker = start_group(tmp_path, "slow", delay=1.5)
    started = time.monotonic()
    _stop_pid(leader.pid)
    took = time.monotonic() - started
    assert not running(worker), "stop returned while the server's worker still ran"
    assert not _group_alive(leader.pid) and 1.2 < took < 15, took


def test_stop_kills_a_worker_that_ignores_sigterm_after_the_grace(tmp_path):
    leader, worker = start_group(tmp_path, "ignore")
    started = time.monotonic()
    _stop_pid(leader.pid, grace_s=1.0)
    took = time.monotonic() - started
    assert not running(worker) and not _group_alive(leader.pid)
    assert 0.9 < took < 10, took
