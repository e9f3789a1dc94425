"""The label flow: decode -> segment -> filter -> polygonize -> track -> persist.

Every stage runs once per frame range (not per frame) and hands on the path of its
cached output, so a rerun redoes only what changed settings touch: the model runs
only for ranges whose raw output is missing.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from typing import Annotated, Optional

from prefect import flow, get_run_logger
from prefect.context import FlowRunContext
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote
from pydantic import Field

from segflow.artifacts import job_progress, publish_summary
from segflow.errors import InputsFailed
from segflow.job import Job, take_job
from segflow.models.registry import cpu_streams
from segflow.progress import NO_PROGRESS, Fanout
from segflow.settings import make_settings
from segflow.storage.manifest import record_run
from segflow.tasks.contracts import VideoInfo
from segflow.tasks.decode import decode_task
from segflow.tasks.filter import filter_task
from segflow.tasks.persist import count_rows, is_persisted, persist_task, remove_stale
from segflow.tasks.polygonize import polygonize_task
from segflow.tasks.segment import cached_raw, for_device
from segflow.tasks.track import track_task


def label_video(job: Job, video: VideoInfo, progress: Fanout = NO_PROGRESS) -> dict:
    """Run the six stages over one input; returns its summary.

    Stages are submitted as futures: while the model segments the next ranges, the
    cheap stages of a finished one run beside it. Each stage is handed finished
    futures only (Prefect asks its API about every unfinished future a task is given).
    """
    q = as_parameter(job)
    ranges = decode_task(q, video)
    if all(is_persisted(job, video, r) for r in ranges):
        progress.on_range_done(sum(len(r) for r in ranges))
        return summarize(job, video, ranges, up_to_date=True)
    raw, kept, polys = [], [], []
    ahead = iter(ranges)  # the model's queue: a few ranges in flight, in order
    segment_task = for_device(job.device)

    def next_segment() -> None:
        rng = next(ahead, None)
        if rng is not None:  # a cached range needs no task run (~25 ms of Prefect each)
            hit = cached_raw(job, video, rng)
            raw.append(Ready(hit) if hit is not None else segment_task.submit(q, video, rng))

    for _ in range(model_streams(job) + 1):
        next_segment()
    filtered = []  # ranges whose filter was submitted, waiting to be polygonized
    for i, r in enumerate(ranges):
        raw[i].wait()
        next_segment()
        progress.on_range_done(len(r))
        kept.append(filter_task.submit(q, video, r, arg(raw[i])))
        filtered.append(i)
        if i + 1 < len(ranges) and isinstance(raw[i + 1], Ready) and len(filtered) < FILTERS_AHEAD:
            continue  # the next raw output is cached: start its filter before waiting on this one
        for j in filtered:
            kept[j].wait()
            polys.append(polygonize_task.submit(q, video, ranges[j], arg(raw[j]), kept[j]))
        filtered.clear()
    for future in (*raw, *kept, *polys):  # surface the first failure as itself, in stage order
        future.result()
    tracks = track_task.submit(q, video, ranges, [arg(x) for x in raw], kept, polys).result()
    files = persist_all(q, video, list(zip(ranges, map(arg, raw), kept, polys, tracks)))
    remove_stale(job, video, ranges)
    return summarize(
        job, video, ranges,
        frames_segmented=sum(s.result().frames_run for s in raw),
        files_written=sum(not f.cached for f in files),
        dropped_unmapped=sum(k.result().dropped_unmapped for k in kept),
    )


def as_parameter(job: Job):
    """The job as a task parameter: quoted for in-process task runners, where Prefect
    would otherwise walk through all of it (settings, model, ontology, every input)
    looking for futures at every task call. Dask pickles parameters and hands a quoted
    value on still wrapped, so there it goes as is."""
    runner = getattr(FlowRunContext.get(), "task_runner", None)
    return quote(job) if isinstance(runner, ThreadPoolTaskRunner) else job


class Ready:
    """A stage output found in the cache, standing in for a finished future."""

    def __init__(self, value) -> None:
        self.value = value

    def wait(self) -> None:
        return None

    def result(self):
        return self.value


def arg(handle):
    """What a task is given for a stage output: the future itself, or a cached value."""
    return handle.value if isinstance(handle, Ready) else handle


FILTERS_AHEAD = 4  # on a rerun, filters of cached ranges run side by side, a few at a time
PERSIST_IN_FLIGHT = 2  # each holds a range's raw detections and rows: bounded, however long the video


def persist_all(job, video: VideoInfo, stages: list[tuple]) -> list:
    """Write every range's label file, a couple at a time, in range order (`job` as
    `as_parameter` hands it to tasks)."""
    pending, done = [], []
    for st in stages:
        if len(pending) == PERSIST_IN_FLIGHT:
            done.append(pending.pop(0).result())
        pending.append(persist_task.submit(job, video, *st))
    return done + [f.result() for f in pending]


def model_streams(job: Job) -> int:
    """How many ranges the model segments side by side (see `cpu_streams`)."""
    return cpu_streams()[0] if job.device.type == "cpu" else 1


def summarize(job: Job, video: VideoInfo, ranges, up_to_date: bool = False, **counts) -> dict:
    """One input's line in the dataset summary."""
    st = os.stat(video.local or video.source)
    return {
        "source": video.source,
        "video_id": video.video_id,
        "kind": video.kind,
        "status": "ok",
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "params_hash": job.params_hash,
        "frames": sum(len(r) for r in ranges),
        "ranges": len(ranges),
        "instances": count_rows(job, video, ranges),
        "frames_segmented": counts.get("frames_segmented", 0),
        "files_written": counts.get("files_written", 0),
        "dropped_unmapped": counts.get("dropped_unmapped", 0),
        "up_to_date": up_to_date,
    }


def failed(source: str, reason: str) -> dict:
    return {"source": source, "status": "failed", "reason": reason, "frames": 0, "instances": 0}


def label_all(job: Job, progress: Fanout = NO_PROGRESS) -> list[dict]:
    """Label every input; one input's failure (after its retries) never stops the others."""
    log = get_run_logger()
    results = [failed(src, reason) for src, reason in job.unreadable]
    results += [{"source": src, "status": "duplicate", "duplicate_of": of, "frames": 0, "instances": 0}
                for src, of in job.duplicates]
    for video in job.videos:
        try:
            started = time.perf_counter()
            results.append(label_video(job, video, progress))
            results[-1]["seconds"] = round(time.perf_counter() - started, 3)
        except Exception as exc:  # reported by name and reason at the end
            log.error("%s failed: %s", video.source, exc)
            results.append(failed(video.source, f"{type(exc).__name__}: {exc}".splitlines()[0]))
    return results


@flow(name="label", log_prints=True)
def label_flow(
    inputs: Annotated[list[str], Field(description="Videos, images, folders or globs")],
    out: Annotated[str, Field(description="Output folder of the label table")],
    model: str = "shapes-demo",
    start_frame: Annotated[int, Field(ge=0)] = 0,
    end_frame: Annotated[Optional[int], Field(ge=0)] = None,
    confidence: Annotated[float, Field(ge=0, le=1)] = 0.6,
    coarseness: Annotated[float, Field(ge=0, le=0.1)] = 0.005,
    iou_threshold: Annotated[float, Field(ge=0, le=1)] = 0.3,
    class_agnostic_nms: bool = False,
    device: str = "auto",
    cpu_fallback: bool = False,
    tracking: bool = True,
    ontology: Optional[str] = None,
    track_buffer: Annotated[int, Field(ge=0)] = 30,
    match_iou: Annotated[float, Field(gt=0, le=1)] = 0.2,
    min_track_length: Annotated[int, Field(ge=1)] = 1,
    track_low_score: Annotated[float, Field(ge=0, le=1)] = 0.1,
    reid_gate: Annotated[float, Field(ge=0, le=100)] = 1.0,
    track_class_penalty: Annotated[Optional[float], Field(ge=0, le=1)] = None,
    min_area: Annotated[float, Field(ge=0)] = 16.0,
    precision: Annotated[str, Field(pattern=r"^(auto|fp32|mixed)$")] = "auto",
    batch_size: Annotated[int, Field(ge=1, le=256)] = 4,
    frames_per_range: Annotated[int, Field(ge=1)] = 64,
) -> dict:
    """Label videos and images with an instance-segmentation model into a Parquet table."""
    settings = make_settings(
        model=model, start_frame=start_frame, end_frame=end_frame, confidence=confidence,
        coarseness=coarseness, iou_threshold=iou_threshold, class_agnostic_nms=class_agnostic_nms,
        device=device, cpu_fallback=cpu_fallback, tracking=tracking, ontology=ontology, track_buffer=track_buffer,
        match_iou=match_iou, min_track_length=min_track_length, track_low_score=track_low_score,
        reid_gate=reid_gate, track_class_penalty=track_class_penalty, min_area=min_area, precision=precision,
        batch_size=batch_size, frames_per_range=frames_per_range,
    )
    job = take_job(inputs, out, settings)  # validated by the CLI already, or now
    get_run_logger().info("labeling %d input(s) with %s on %s", len(job.videos), job.model.model_id, job.device)
    progress = job_progress(job)
    results = label_all(job, progress)
    run = {
        "finished_at": datetime.now(timezone.utc).isoformat(),
        "model_id": job.model.model_id,
        "params_hash": job.params_hash,
        "settings": settings.model_dump(),
        "device": str(job.device),
        "ontology": job.ontology.to_json(),
    }
    record_run(job.layout, run, {r["source"]: r for r in results})
    progress.on_finish()
    publish_summary(run, results, str(job.layout.root))
    summary = {"out": str(job.layout.root), **run, "inputs": results}
    bad = [r for r in results if r["status"] == "failed"]
    if bad:
        names = "; ".join(f"{r['source']} ({r['reason']})" for r in bad)
        raise InputsFailed(f"{len(bad)} of {len(results)} input(s) failed: {names}", summary)
    return summary
