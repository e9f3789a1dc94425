"""A command's run recorded on a Prefect server through its REST API, without Prefect.

`segflow export`, `preview` and `review` do their work in this process whether or not a
Prefect server records it; where one does (`segflow.server.prefect_api`), `recorded`
records the work as the flow run it replaces would be: a run of the flow of the same
name (`export`, `preview`, `review`) with the same parameters, Running while the work
runs, then Completed (or Failed with the one-line error), the same log lines and
artifacts. Prefect's import alone costs ~1.2 s of CPU; these are 5-6 small HTTP requests
(`urllib`, no new import).

Requests (Prefect 3.9's server schemas, `prefect/server/schemas/actions.py`):
`POST /flows/` {"name"} (returns the existing flow of that name), `POST /flow_runs/`
{"flow_id", "parameters", "state": {"type": "RUNNING", ...}} (the server names the run),
`POST /artifacts/` {"key", "type": "table", "description", "data", "flow_run_id"},
`POST /logs/` [{"name", "level", "message", "timestamp", "flow_run_id"}], and
`POST /flow_runs/{id}/set_state` {"state": {"type": "COMPLETED"|"FAILED", ...}}.

A server that does not answer (or refuses a request) costs the record, never the work:
one warning line on stderr, and the command's output and exit status as without a server
(the user asked for the file; the run's record is its log).
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import sys
import urllib.error
import urllib.request
from datetime import datetime, timezone
from typing import Any, Iterator

TIMEOUT_S = 10.0
LOGGER = "prefect.flow_runs"  # the logger name of a flow run's own lines
INFO, ERROR = 20, 40


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def flow_version(module: str) -> str | None:
    """What Prefect records as a flow's version: the MD5 of its source file (`module`,
    found without importing it), None where it cannot be read."""
    import hashlib
    import importlib.util

    try:
        origin = importlib.util.find_spec(module).origin
        return hashlib.md5(open(origin, "rb").read(), usedforsecurity=False).hexdigest()
    except (ImportError, AttributeError, OSError, TypeError):
        return None


def _sanitize(item: Any) -> Any:
    """NaN as null, as Prefect's table artifacts write it."""
    if isinstance(item, dict):
        return {k: _sanitize(v) for k, v in item.items()}
    if isinstance(item, (list, tuple)):
        return [_sanitize(v) for v in item]
    return None if isinstance(item, float) and math.isnan(item) else item


class ServerRun:
    """One flow run of `flow` with `parameters` on the Prefect API `api_url`. Every method
    is a no-op once a request failed (`lost` says why, warned once)."""

    def __init__(self, api_url: str, flow: str, parameters: dict, version: str | None = None,
                 ui_url: str | None = None) -> None:
        self.api_url, self.flow, self.parameters, self.version = api_url.rstrip("/"), flow, parameters, version
        self.ui_url = (ui_url or os.environ.get("PREFECT_UI_URL") or self.api_url.removesuffix("/api")).rstrip("/")
        self.id: str | None = None
        self.name: str | None = None
        self.lost: str | None = None
        self._logs: list[dict] = []

    def _request(self, path: str, body: Any) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if os.environ.get("PREFECT_API_KEY"):
            headers["Authorization"] = f"Bearer {os.environ['PREFECT_API_KEY']}"
        elif os.environ.get("PREFECT_API_AUTH_STRING"):
            token = base64.b64encode(os.environ["PREFECT_API_AUTH_STRING"].encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        request = urllib.request.Request(f"{self.api_url}{path}", data=json.dumps(body).encode(), headers=headers,
                                         method="POST")
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as reply:
            text = reply.read()
        return json.loads(text) if text else None

    def _call(self, path: str, body: Any) -> Any:
        if self.lost is not None:
            return None
        try:
            return self._request(path, body)
        except (OSError, ValueError) as exc:  # unreachable, refused (HTTPError is an OSError), not JSON
            detail = f"HTTP {exc.code}" if isinstance(exc, urllib.error.HTTPError) else (
                str(getattr(exc, "reason", "") or exc) or type(exc).__name__)
            self.lost = f"{self.api_url}: {detail}"
            print(f"segflow: warning: the Prefect server did not record this {self.flow} run ({self.lost}); "
                  "the work is done", file=sys.stderr)
            return None

    def start(self) -> None:
        """The flow (found or created by name) and its run, Running from now."""
        flow = self._call("/flows/", {"name": self.flow})
        if flow is None:
            return
        run = self._call("/flow_runs/", {"flow_id": flow["id"], "flow_version": self.version,
                                         "parameters": self.parameters, "state": {"type": "RUNNING", "name": "Running"},
                                         "empirical_policy": {"retries": 0, "retry_delay": 0}})
        if run is None:
            return
        self.id, self.name = run["id"], run["name"]
        self.log(f"Beginning flow run '{self.name}' for flow '{self.flow}'", echo=False)
        print(f"Flow run '{self.name}' - View at {self.ui_url}/runs/flow-run/{self.id}", file=sys.stderr)

    def log(self, message: str, level: int = INFO, echo: bool = True) -> None:
        """A line of the run's log (sent with its final state), also on stderr as Prefect prints one."""
        if echo and self.name is not None:
            print(f"Flow run '{self.name}' - {message}", file=sys.stderr)
        self._logs.append({"name": LOGGER, "level": level, "message": message, "timestamp": _now(),
                           "flow_run_id": self.id})

    def table(self, key: str, rows: list[dict], description: str) -> None:
        """A table artifact of the run (data as Prefect's `create_table_artifact` writes it)."""
        if self.id is not None:
            self._call("/artifacts/", {"key": key, "type": "table", "description": description,
                                       "data": json.dumps(_sanitize(rows)), "flow_run_id": self.id})

    def finish(self, error: BaseException | None = None) -> None:
        """The final state: Completed, Failed with the error's one line (Crashed for an interrupt)."""
        if self.id is None:
            return
        if error is None:
            state, ending = {"type": "COMPLETED", "name": "Completed"}, "Finished in state Completed()"
        else:
            message = f"Flow run encountered an exception: {type(error).__name__}: {error}"
            kind = ("FAILED", "Failed") if isinstance(error, Exception) else ("CRASHED", "Crashed")
            state = {"type": kind[0], "name": kind[1], "message": message}
            ending = f"Finished in state {kind[1]}({message!r})"
        self.log(ending, INFO if error is None else ERROR, echo=error is None)
        self._call("/logs/", [{**line, "flow_run_id": self.id} for line in self._logs])
        self._call(f"/flow_runs/{self.id}/set_state", {"state": state, "force": False})


@contextlib.contextmanager
def recorded(api_url: str | None, flow: str, parameters: dict) -> Iterator[ServerRun | None]:
    """Record the work inside as a run of `flow` (of `segflow.flows.<flow>`) on `api_url`
    (None: nothing recorded, yields None). An error inside fails the run and propagates unchanged."""
    if api_url is None:
        yield None
        return
    run = ServerRun(api_url, flow, parameters, flow_version(f"segflow.flows.{flow}"))
    run.start()
    try:
        yield run
    except BaseException as exc:
        run.finish(exc)
        raise
    run.finish()
