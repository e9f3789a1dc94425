"""The parts a segflow deployment runs on, started as their own processes so they can be
killed: a Prefect server, an S3-compatible server (moto), a Dask scheduler and workers,
a small tmpfs as an output disk. Used by bench/chaos.py and the fault tests.

Every process starts in a session of its own: `Part.kill()` SIGKILLs its whole process
group (a Prefect server serves from a child process), `Part.stop()` ends it politely.
Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx


class Unavailable(RuntimeError):
    """A part cannot be had here (not root for a tmpfs, a package missing): skip, say why."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Part:
    """A process (group) that a fault can SIGKILL."""

    def __init__(self, argv: list[str], env: dict, log: Path, name: str, cwd: Path | None = None) -> None:
        self.name = name
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as sink:
            self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=sink, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the part and every process it started (also those in sessions of their
        own, as a Prefect worker starts its flow runs): as if its machine went away."""
        family = descendants(self.proc.pid)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in family:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()

    def stop(self, grace: float = 10.0) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill()
        else:
            self.kill()  # its children may live on

    def wait_until(self, ready, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited at start: {self.log.read_text()[-2000:]}")
            try:
                if ready():
                    return
            except Exception:  # noqa: BLE001 - not up yet
                pass
            time.sleep(0.25)
        self.kill()
        raise RuntimeError(f"{self.name} not up within {timeout:.0f} s: {self.log.read_text()[-2000:]}")


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (from /proc; empty where there is none)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def base_env(**extra: str) -> dict:
    return {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **extra}


def prefect_server(home: Path, port: int | None = None, timeout: float = 120.0) -> tuple[Part, str]:
    """`prefect server start` on 127.0.0.1 with its own PREFECT_HOME; (part, api url)."""
    port = port or free_port()
    env = base_env(PREFECT_HOME=str(home), PREFECT_UI_ENABLED="false")
    env.pop("PREFECT_API_URL", None)
    part = Part([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                env, home / "server.log", "prefect server")
    url = f"http://127.0.0.1:{port}/api"
    part.wait_until(lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200, timeout)
    return part, url


def moto_server(port: int | None = None, log: Path | None = None) -> tuple[Part, str]:
    """moto's S3-compatible server on 127.0.0.1 (objects live in its memory); (part, endpoint)."""
    try:
        import moto.server  # noqa: F401
    except ImportError:
        raise Unavailable("moto[server] is not installed") from None
    port = port or free_port()
    endpoint = f"http://127.0.0.1:{port}"
    part = Part([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], base_env(),
                log or Path(f"/tmp/moto-{port}.log"), "moto server")
    part.wait_until(lambda: httpx.get(f"{endpoint}/moto-api/", timeout=2).status_code < 500, 60)
    return part, endpoint


def s3_env(endpoint: str) -> dict:
    return {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint}


def s3_fs(endpoint: str):
    """An s3fs filesystem on `endpoint` (no instance cache: the server may be a new one)."""
    import fsspec

    return fsspec.filesystem("s3", key="testing", secret="testing", client_kwargs={"endpoint_url": endpoint},
                             skip_instance_cache=True, use_listings_cache=False)


def dask_scheduler(work: Path) -> tuple[Part, str]:
    """`dask scheduler` on 127.0.0.1; (part, address)."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise Unavailable("dask.distributed is not installed") from None
    port = free_port()
    part = Part([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                 "--no-dashboard"], base_env(), work / "scheduler.log", "dask scheduler")
    address = f"tcp://127.0.0.1:{port}"
    part.wait_until(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() is None, 60)
    return part, address


def dask_worker(address: str, folder: Path, env: dict) -> Part:
    """`dask worker ADDRESS --nthreads 1` run from a folder of its own (no shared working
    directory: its SEGFLOW_CACHE and dask's local directory are in it too)."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {**env, "SEGFLOW_CACHE": str(folder / "cache")}
    argv = [sys.executable, "-m", "dask", "worker", address, "--nthreads", "1", "--host", "127.0.0.1",
            "--local-directory", str(folder / "dask"), "--no-dashboard", "--name", folder.name]
    with open(folder / "worker.log", "ab") as sink:
        proc = subprocess.Popen(argv, env=env, cwd=folder, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
    part = Part.__new__(Part)
    part.name, part.log, part.proc = f"dask worker {folder.name}", folder / "worker.log", proc
    return part


def wait_for_workers(address: str, n: int, timeout: float = 90.0) -> None:
    from distributed import Client

    with Client(address, timeout=timeout) as client:
        client.wait_for_workers(n, timeout=timeout)


@contextmanager
def tmpfs(path: Path, size_kb: int):
    """A tmpfs of `size_kb` KiB mounted at `path` (root only); unmounted after."""
    if os.geteuid() != 0:
        raise Unavailable("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise Unavailable(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def resize_tmpfs(path: Path, size_kb: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size_kb}k", str(path)], check=True, capture_output=True)


def disk_full(path: Path) -> bool:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize < 8192
