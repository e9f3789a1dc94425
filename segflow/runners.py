"""Where a flow's tasks run: threads in this process (default) or a Dask cluster."""

from __future__ import annotations

from prefect.task_runners import ThreadPoolTaskRunner

from segflow.errors import SegflowError
from segflow.models.registry import cpu_streams

RUNNERS = ("threads", "dask")


def make_task_runner(runner: str = "threads", address: str | None = None, workers: int = 2):
    """A Prefect task runner.

    `dask` with no address starts a local cluster of `workers` single-threaded worker
    processes; with an address (`tcp://host:8786`) it joins an existing scheduler whose
    workers run on other machines (each with segflow installed and the inputs and
    output folder reachable at the same paths or URIs).
    """
    if runner == "threads":
        # Segment, filter and polygonize of each range in flight, plus one spare.
        return ThreadPoolTaskRunner(max_workers=3 * cpu_streams()[0] + 1)
    if runner != "dask":
        raise SegflowError(f"--runner {runner}: use one of {', '.join(RUNNERS)}")
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise SegflowError("--runner dask: install the dask extra (pip install 'segflow[dask]')") from None
    if address:
        return DaskTaskRunner(address=address)
    if workers < 1:
        raise SegflowError(f"--dask-workers {workers}: need at least 1")
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True})
