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

from segflow.artifacts import job_progress, publish_summary, side_by_side
from segflow.errors import InputsFailed
from segflow.job import Job, take_job
from segflow.pipeline import Board, Ready, Stage, add_ranges, output_of
from segflow.models.registry import cpu_streams
from segflow.progress import NO_PROGRESS, Fanout
from segflow.settings import make_settings
from segflow.storage.manifest import record_run
from segflow.tasks.contracts import VideoInfo
from segflow.tasks.decode import decode_task
from segflow.tasks.filter import cached_kept, filter_task
from segflow.tasks.persist import count_rows, is_persisted, persist_task, remove_stale
from segflow.tasks.polygonize import cached_polygons, polygonize_task
from segflow.tasks.segment import cached_raw, for_device
from segflow.tasks.track import cached_track, track_task


def label_video(job: Job, video: VideoInfo, progress: Fanout = NO_PROGRESS) -> dict:
    """Run the six stages over one input; returns its summary.

    Each frame range moves through the stages on its own: while the model segments the
    next ranges, finished ones are filtered, polygonized, tracked (in range order: ids
    continue from the range before) and persisted beside it, so little is left to do
    when the model finishes. A stage is submitted once its inputs are done: tasks are
    handed finished futures only (Prefect asks its API about every unfinished future a
    task is given), and every stage keeps a bounded number of ranges in flight.
    """
    q = as_parameter(job)
    ranges = decode_task(q, video)
    if all(is_persisted(job, video, r) for r in ranges):
        progress.on_range_done(sum(len(r) for r in ranges))
        return summarize(job, video, ranges, up_to_date=True)
    segment_task = for_device(job.device)
    n, board = len(ranges), Board()
    raw, kept, polys, tracks, files = stages = [Stage(board) for _ in range(5)]

    def segmented(i: int) -> bool:
        # The model's ranges come one at a time: each goes on alone, so the next stage
        # starts on it at once (ranges from the cache, ready together, share tasks).
        return not isinstance(raw[i], Ready)

    while not (len(files) == n and files.in_flight() == 0) and not board.failed:
        board.arm()
        submitted = sum(map(len, stages))
        while len(raw) < n and raw.in_flight() <= model_streams(job):  # the model's queue, in order
            r = ranges[len(raw)]
            hit = cached_raw(job, video, r)  # a cached range needs no task run (~25 ms of Prefect each)
            raw.add(Ready(hit) if hit is not None else segment_task.submit(q, video, r))
        # A stage whose output is cached already needs no task run for it (as for the model);
        # ranges ready together go to one task (all of them on a rerun).
        todo = kept.ready(raw, min(RANGES_PER_TASK, FILTERS_AHEAD - (len(kept) - len(polys))))
        if todo:
            progress.on_range_done(sum(len(ranges[i]) for i in todo))
        add_ranges(kept, todo, lambda i: cached_kept(job, video, ranges[i], output_of(raw, i)),
                   lambda ii: filter_task.submit(q, video, [ranges[i] for i in ii], [raw.arg(i) for i in ii]), segmented)
        add_ranges(polys, polys.ready(kept, RANGES_PER_TASK),
                   lambda i: cached_polygons(job, video, ranges[i], output_of(kept, i)),
                   lambda ii: polygonize_task.submit(q, video, [ranges[i] for i in ii], [raw.arg(i) for i in ii],
                                                     [kept.arg(i) for i in ii]),
                   segmented, POLYGONIZE_IN_FLIGHT - polys.tasks_in_flight())
        if len(tracks) < len(polys) and polys.done(len(tracks)) and tracks.in_flight() == 0:
            # ids continue from the range before: one task at a time, in range order, over
            # every range ready for it (one by one behind the model; on a rerun, all at once)
            first = len(tracks)
            previous = output_of(tracks, first - 1) if first else None
            while first < len(polys) and polys.done(first):
                hit = cached_track(job, video, ranges[first], output_of(raw, first), output_of(polys, first), previous)
                if hit is None:
                    break
                tracks.add(Ready(hit))
                previous, first = hit, first + 1
            ii = tracks.ready(polys, n)
            if ii:
                tracks.add(track_task.submit(q, video, [ranges[i] for i in ii], [raw.arg(i) for i in ii],
                                             [kept.arg(i) for i in ii], [polys.arg(i) for i in ii], previous), len(ii))
        add_ranges(files, files.ready(tracks, RANGES_PER_TASK), lambda i: None,
                   lambda ii: persist_task.submit(q, video, [ranges[i] for i in ii], [raw.arg(i) for i in ii],
                                                  [kept.arg(i) for i in ii], [polys.arg(i) for i in ii],
                                                  [tracks.arg(i) for i in ii]),
                   segmented, PERSIST_IN_FLIGHT - files.tasks_in_flight())
        if sum(map(len, stages)) == submitted:  # nothing new to start: sleep until a task finishes
            if not any(st.in_flight() for st in stages):
                if board.failed:  # seen just now: raised below, in stage order
                    break
                raise RuntimeError(f"{video.source}: the label pipeline stalled (nothing in flight, nothing to start)")
            board.wait()
    for st in stages:  # after a failure: let the ranges in flight finish, then raise the first, in stage order
        st.wait_all()
    for st in stages:
        st.raise_first_failure()
    remove_stale(job, video, ranges)
    return summarize(
        job, video, ranges,
        frames_segmented=sum(h.result().frames_run for h in raw.handles),
        files_written=sum(not output_of(files, i).cached for i in range(n)),
        dropped_unmapped=sum(output_of(kept, i).dropped_unmapped for i in range(n)),
    )


def as_parameter(job: Job):
    """The job as a task parameter: quoted for in-process task runners, where Prefect
    would otherwise walk through all of it (settings, model, ontology, every input)
    looking for futures at every task call. Dask pickles parameters and hands a quoted
    value on still wrapped, so there it goes as is."""
    runner = getattr(FlowRunContext.get(), "task_runner", None)
    return quote(job) if isinstance(runner, ThreadPoolTaskRunner) else job


RANGES_PER_TASK = 4  # ranges ready together (a rerun) go to one task run, a few at a time
FILTERS_AHEAD = 4  # ranges filtered and not yet polygonized
POLYGONIZE_IN_FLIGHT = 2  # tasks side by side: mostly GIL-free calls (see tasks/polygonize.py)
PERSIST_IN_FLIGHT = 2  # tasks side by side, each holding one range's detections and rows at a time


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
    batch_size: Annotated[Optional[int], Field(ge=1, le=256)] = None,
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
    side_by_side(progress.on_finish, lambda: publish_summary(run, results, str(job.layout.root)))
    summary = {"out": str(job.layout.root), **run, "inputs": results}
    bad = [r for r in results if r["status"] == "failed"]
    if bad:
        names = "; ".join(f"{r['source']} ({r['reason']})" for r in bad)
        raise InputsFailed(f"{len(bad)} of {len(results)} input(s) failed: {names}", summary)
    return summary
