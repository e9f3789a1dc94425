"""What a deployed flow run tells its user: one summary line, or one refusal line.

`reported` wraps the body of a deployment's flow (label-dataset, label-inbox, relabel):

- every run ends with one log line: inputs, frames, instances, objects, seconds, output;
- in a run a worker started (a deployment's run, `PREFECT__FLOW_RUN_ID` is set), a
  refused setting or input (`SegflowError`) ends the run Failed with one line that names
  the parameter as the UI form shows it (`Confidence (confidence)=1.5: ...`), no
  traceback. Called in-process (the CLI, tests), the error is raised as before.
"""

from __future__ import annotations

import functools
import logging
import inspect
import os
import time
from typing import Any, Callable

from prefect import get_run_logger
from prefect.states import Failed

from segflow.errors import InputsFailed, SegflowError
from segflow.settings import in_form_terms


def deployed() -> bool:
    """Whether this process runs a flow run a worker (or `serve`) started."""
    return bool(os.environ.get("PREFECT__FLOW_RUN_ID"))


def reported(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` (a flow's function) with its closing summary line and one-line refusals."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            result = fn(*args, **kwargs)
        except SegflowError as exc:
            if not deployed():
                raise
            line = in_form_terms(str(exc).splitlines()[0])
            if isinstance(exc, InputsFailed):
                get_run_logger().info(summary_line(exc.summary, time.perf_counter() - started))
            get_run_logger().error(line)
            _REFUSED.add(line)
            logging.getLogger("prefect.flow_runs").addFilter(_said_already)
            return Failed(message=line)
        if isinstance(result, dict):
            get_run_logger().info(result.get("note") or summary_line(result, time.perf_counter() - started))
        return result

    # annotations resolved in the flow's module (Prefect builds its parameter model from them)
    run.__signature__ = inspect.signature(fn, eval_str=True)  # type: ignore[attr-defined]
    return run


_REFUSED: set[str] = set()  # refusal lines this process ended a run with


def _said_already(record: logging.LogRecord) -> bool:
    """Drop Prefect's "Engine execution exited with unexpected exception" + traceback of a
    run that ended with one of our refusal lines (the engine raises the Failed state it
    was handed, and logs that to the run's log); every other record passes."""
    exc = record.exc_info[1] if record.exc_info else None
    return not (exc is not None and str(exc) in _REFUSED)


def summary_line(result: dict, seconds: float) -> str:
    """`labeled 2 inputs: 24 frames, 31 instances, 6 objects, 12 frames segmented in 3.1 s -> /data/labels`."""
    inputs = result.get("inputs") or []
    ok = [r for r in inputs if r.get("status") == "ok"]
    out = result.get("out", "")
    # A shard's images are counted together (object ids are per image: their sum is the shard's).
    where = {(r.get("shard") or r["video_id"], r.get("shard")) for r in ok if r.get("video_id")}
    objects = sum(_objects(out, video_id, shard) for video_id, shard in where)
    failed = sum(r.get("status") == "failed" for r in inputs)
    line = (f"labeled {len(ok)} input(s): {sum(r.get('frames', 0) for r in ok)} frames, "
            f"{sum(r.get('instances', 0) for r in ok)} instances, {objects} objects, "
            f"{sum(r.get('frames_segmented', 0) for r in ok)} frames segmented in {seconds:.1f} s -> {out}")
    return line + (f" ({failed} input(s) failed)" if failed else "")


def _objects(out: str, video_id: str, shard: str | None = None) -> int:
    """Distinct object ids in one input's label files, or a whole shard's (`video_id` the
    shard's id); 0 where they cannot be read here."""
    from segflow.artifacts import input_stats

    try:
        return int(input_stats(out, video_id, shard)["objects"])
    except Exception:  # an object store, or files gone meanwhile: the line still closes the run
        return 0
