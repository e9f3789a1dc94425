"""`segflow server start|stop|status`: a local Prefect server that segflow manages.

Without `PREFECT_API_URL`, every Prefect command starts a temporary server (5-20 s) whose
runs vanish with it. `segflow server start` starts one server for good: on a free port
of 127.0.0.1 (never someone else's 4200), with a Prefect home of its own, its PID, port
and URL recorded in `STATE_DIR/server.json`. Later segflow commands find that record
(`use_running_server`, from `segflow.cli.main`) and talk to that server, so each run
stays in its UI and the CLI prints the run's link.

Files (`SEGFLOW_HOME`, default `~/.segflow`): `server/server.json` (pid, port, url,
api_url, prefect_home, started_at), `server/server.log`, `server/prefect-home/`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import click

from segflow.errors import SegflowError

START_TIMEOUT_S = 120.0  # a first start migrates the server's database (~10-40 s on a busy machine)


def state_dir() -> Path:
    """The folder of the managed server's record, log and Prefect home."""
    return Path(os.environ.get("SEGFLOW_HOME") or Path.home() / ".segflow").expanduser() / "server"


def record_path() -> Path:
    return state_dir() / "server.json"


def read_record() -> dict | None:
    """The recorded server, if its process still runs (a stale record is removed)."""
    try:
        record = json.loads(record_path().read_text())
    except (OSError, ValueError):
        return None
    if not _alive(int(record.get("pid", 0))):
        record_path().unlink(missing_ok=True)
        return None
    return record


def use_running_server() -> str | None:
    """Point this process's Prefect client at the managed server when one is running and
    no `PREFECT_API_URL` is set; returns its API URL (None: Prefect decides, as before).
    Costs a file read and a `kill(pid, 0)`: no import of Prefect, no request."""
    if os.environ.get("PREFECT_API_URL"):
        return None
    record = read_record()
    if record is None:
        return None
    os.environ["PREFECT_API_URL"] = record["api_url"]
    os.environ.setdefault("PREFECT_UI_URL", record["url"])
    return record["api_url"]


def prefect_api() -> str | None:
    """The Prefect API a flow run of this process would record to, None where none is
    configured (a flow run would start a temporary server, its record gone with it).

    `PREFECT_API_URL` in the environment (`use_running_server` sets it for a managed
    server), else Prefect's own settings: once Prefect is imported (a settings context,
    the tests' server) always, before that only where a settings file Prefect reads could
    set one (a profile, `prefect.toml`, `.env`, `pyproject.toml`'s `[tool.prefect]`):
    without any, the answer needs no import of Prefect (1-3 s)."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    if "prefect.settings" not in sys.modules and not _settings_may_set_api():
        return None
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


def _settings_may_set_api() -> bool:
    """Whether a settings source of Prefect other than the environment may set its API URL
    (checked loosely: in doubt, Prefect is asked)."""
    if os.environ.get("PREFECT_PROFILES_PATH") or Path("prefect.toml").exists():
        return True
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    for path, mark in ((Path(".env"), "prefect"), (Path("pyproject.toml"), "tool.prefect"),
                       (home / "profiles.toml", "url")):
        try:
            if mark in path.read_text(errors="replace").lower():
                return True
        except OSError:  # not there (or unreadable, as Prefect would find it too)
            continue
    return False


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as reply:
            return reply.status == 200
    except OSError:
        return False


def start_server(port: int | None = None) -> dict:
    """Start the managed server (or return the one running); waits until it answers."""
    running = read_record()
    if running is not None:
        return running
    folder = state_dir()
    (folder / "prefect-home").mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    url, api_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(folder / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               PREFECT_UI_API_URL=api_url)
    log = (folder / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while not healthy(api_url):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop_pid(proc.pid)
            tail = (folder / "server.log").read_text().strip().splitlines()[-1:] or ["no output"]
            raise SegflowError(f"segflow server: the Prefect server did not start ({tail[0]}); log: {folder / 'server.log'}")
        time.sleep(0.3)
    record = {"pid": proc.pid, "port": port, "url": url, "api_url": api_url, "prefect_home": str(folder / "prefect-home"),
              "log": str(folder / "server.log"), "started_at": datetime.now(timezone.utc).isoformat()}
    record_path().write_text(json.dumps(record, indent=2))
    return record


def stop_server() -> dict | None:
    """Stop the managed server; returns its record (None: none was running)."""
    record = read_record()
    if record is None:
        return None
    _stop_pid(int(record["pid"]))
    record_path().unlink(missing_ok=True)
    return record


def _alive(pid: int) -> bool:
    """Whether `pid` runs a Prefect server (not a process that got the number later)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if Path("/proc").is_dir() else b"prefect server"
    except (OSError, PermissionError):
        return False
    return b"prefect" in cmdline and b"server" in cmdline


STOP_GRACE_S = 20  # seconds the server's processes get to exit after SIGTERM, before SIGKILL


def _stop_pid(pid: int, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the server's process group and return only once every process of it is
    gone (the leader exiting first is not enough: its workers may still hold the port
    and the database); SIGKILL what is left after `grace_s`, then wait for that too."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if _wait_group(pid, grace_s):
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    _wait_group(pid, 5)


def _wait_group(pgid: int, seconds: float) -> bool:
    """Wait up to `seconds` for process group `pgid` to be gone; whether it is."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            os.waitpid(pgid, os.WNOHANG)  # reap the leader if this process started it
        except ChildProcessError:  # not our child (started by an earlier command)
            pass
        if not _group_alive(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs (zombies, exited but not yet reaped by
    their parent, do not count)."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "(comm)": state ppid pgrp ...
        except (OSError, IndexError):
            continue  # exited while we looked
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


@click.group("server")
def server() -> None:
    """A local Prefect server that later segflow commands use (start, stop, status)."""


@server.command("start", short_help="Start the server (or show the running one).")
@click.option("--port", type=int, default=None, help="Port on 127.0.0.1  [default: a free one]")
def start(port: int | None) -> None:
    """Start the server (or show the running one); segflow commands use it from now on."""
    was = read_record()
    record = start_server(port)
    state = "already running" if was else "started"
    click.echo(f"Prefect server {state}: {record['url']} (PID {record['pid']}, PREFECT_HOME {record['prefect_home']})")
    click.echo(f"segflow commands use it; other Prefect tools: export PREFECT_API_URL={record['api_url']}")


@server.command("stop", short_help="Stop the server.")
def stop() -> None:
    """Stop the server that `segflow server start` started."""
    record = stop_server()
    click.echo(f"stopped the Prefect server at {record['url']} (PID {record['pid']})" if record
               else "no segflow server running")


@server.command("status", short_help="Whether it runs, and where (exit 1 when not).")
def status() -> None:
    """Show whether the server runs, and where (exit status 1 when it does not)."""
    record = read_record()
    if record is None:
        click.echo("no segflow server running (start one with `segflow server start`)")
        raise SystemExit(1)
    state = "running" if healthy(record["api_url"]) else "starting or not answering"
    click.echo(f"{state}: {record['url']} (PID {record['pid']}, since {record['started_at']}, log {record['log']})")


@server.command("url", short_help="Print its API URL (for PREFECT_API_URL).")
def url() -> None:
    """Print the running server's API URL (for `export PREFECT_API_URL=$(segflow server url)`)."""
    record = read_record()
    if record is None:
        raise SegflowError("no segflow server running (start one with `segflow server start`)")
    click.echo(record["api_url"])
