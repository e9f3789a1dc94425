"""The label flow: decode -> segment -> filter -> polygonize -> track -> persist.

Every stage runs once per frame range (not per frame) and hands on the path of its
cached output, so a rerun redoes only what changed settings touch: the model runs
only for ranges whose raw output is missing.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from datetime import datetime, timezone
from typing import Annotated

from prefect import flow, get_run_logger
from prefect.context import FlowRunContext
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote
from pydantic import Field

from segflow.artifacts import job_progress, publish_summary, side_by_side
from segflow.errors import InputsFailed
from segflow.faults import output_failed, run_recorded
from segflow.job import Job, take_job
from segflow.pipeline import Board, Ready, Stage, add_ranges, output_of, outputs_of, runs_of
from segflow.models.registry import cpu_streams
from segflow.progress import NO_PROGRESS, Fanout
from segflow.flowrun import reported
from segflow.settings import DEFAULT_OUT, AdvancedSettings, LabelSettings, PanelSettings
from segflow.storage.manifest import record_run
from segflow.contracts import FrameRange, StageOutput, VideoInfo
from segflow.tasks.decode import decode_task
from segflow.tasks.filter import cached_kept, filter_task
from segflow.tasks.persist import count_rows, is_persisted, persist_task, remove_stale
from segflow.tasks.polygonize import cached_polygons, polygonize_task
from segflow.tasks.segment import cached_raw, for_device
from segflow.tasks.track import cached_track, track_task


def label_inputs(job: Job, videos: list[VideoInfo], progress: Fanout = NO_PROGRESS) -> list[dict]:
    """Run the six stages over one video, or a group of images; a summary per input.

    Each frame range (a video's range, or one image) moves through the stages on its
    own: while the model segments the next ranges, finished ones are filtered,
    polygonized, tracked (in range order: ids continue from the range before) and
    persisted beside it, so little is left to do when the model finishes. A stage is
    submitted once its inputs are done: tasks are handed finished outputs only (Prefect
    asks its API about every unfinished future a task is given), and every stage keeps a
    bounded number of frames in flight. Ranges ready together share a task run (a run
    costs Prefect ~10 ms; a group's images are that many one-frame ranges).
    """
    q = as_parameter(job)
    decoded = decode_task.submit(q, as_parameter(videos))
    planned = decoded.result()
    todo = []  # inputs with a range to (re)do
    for video, rr in zip(videos, planned):
        if all(is_persisted(job, video, r) for r in rr):
            progress.on_range_done(sum(len(r) for r in rr))
        else:
            todo.append((video, rr))
    parts = [(v, r) for v, rr in todo for r in rr]
    counts = {id(v): dict(frames_segmented=0, files_written=0, dropped_unmapped=0) for v, _ in todo}
    stages = run_stages(job, q, parts, progress, decoded) if parts else []
    for (video, _), (raw, kept, written) in zip(parts, stages):
        c = counts[id(video)]
        c["frames_segmented"] += raw.frames_run
        c["files_written"] += not written.cached
        c["dropped_unmapped"] += kept.dropped_unmapped
    for video, rr in todo:
        remove_stale(job, video, rr)
    return [summarize(job, v, rr, up_to_date=id(v) not in counts, **counts.get(id(v), {}))
            for v, rr in zip(videos, planned)]


def run_stages(job: Job, q, parts: list[tuple[VideoInfo, FrameRange]], progress: Fanout, decoded) -> list[tuple]:
    """Segment, filter, polygonize, track and persist every range of `parts` (planned by
    the `decoded` task run); returns each range's raw, kept and label-file outputs."""
    segment_task = for_device(job.device)
    n, board = len(parts), Board()
    videos, ranges = [v for v, _ in parts], [r for _, r in parts]
    raw, kept, polys, tracks, files = stages = [Stage(board) for _ in range(5)]
    most = RANGES_PER_TASK * job.settings.frames_per_range  # frames per task run

    def frames(i: int) -> int:
        return len(ranges[i])

    def together(i: int, j: int) -> bool:
        # Ranges from the cache go on together; those the model made in this run go on
        # with their own model task's ranges only, as soon as it is done.
        a, b = raw[i], raw[j]
        return a is b or (isinstance(a, Ready) and isinstance(b, Ready))

    def track_before(i: int):
        # ids continue from the range before within an input; a group's next image starts afresh
        return output_of(tracks, i - 1) if i and videos[i - 1].video_id == videos[i].video_id else None

    def cut(ii: list[int]):
        return as_parameter([videos[i] for i in ii]), as_parameter([ranges[i] for i in ii])

    def outputs(stage: Stage, ii: list[int]):
        return as_parameter(outputs_of(stage, ii))

    last = {v.video_id: i for i, v in enumerate(videos)}  # each input's last range
    tracked = InputTracked(tracks, [last[v.video_id] for v in videos])

    def whole(ii: list[int]) -> dict:
        # every range's stage outputs of the inputs of ranges ii (all tracked)
        return {vid: [tuple(output_of(st, j) for st in (raw, kept, polys, tracks))
                      for j in range(n) if videos[j].video_id == vid]
                for vid in {videos[i].video_id for i in ii}}

    while not (len(files) == n and files.in_flight() == 0) and not board.failed:
        board.arm()
        submitted = sum(map(len, stages))
        pending = sum(st.in_flight() for st in stages)  # a task finishing while we look is seen below
        while len(raw) < n and raw.tasks_in_flight() <= model_streams(job):  # the model's queue, in order
            ii = model_ranges(job, parts, len(raw))
            if isinstance(ii, StageOutput):  # cached: no task run (~25 ms of Prefect each)
                raw.add(Ready(ii))
            else:
                raw.add(segment_task.submit(q, *cut(ii), wait_for=[decoded]), len(ii))
        # A stage whose output is cached already needs no task run for it (as for the model).
        ahead = FILTERS_AHEAD * job.settings.frames_per_range - sum(map(frames, range(len(polys), len(kept))))
        todo = kept.ready(raw, min(most, ahead), frames)
        if todo:
            progress.on_range_done(sum(map(frames, todo)))
        add_ranges(kept, todo, lambda i: cached_kept(job, *parts[i], output_of(raw, i)),
                   lambda ii: filter_task.submit(q, *cut(ii), outputs(raw, ii), wait_for=runs_of(raw, ii)), together)
        add_ranges(polys, polys.ready(kept, most, frames),
                   lambda i: cached_polygons(job, *parts[i], output_of(kept, i)),
                   lambda ii: polygonize_task.submit(q, *cut(ii), outputs(raw, ii), outputs(kept, ii),
                                                   wait_for=runs_of(kept, ii)),
                   together, POLYGONIZE_IN_FLIGHT - polys.tasks_in_flight())
        if len(tracks) < len(polys) and polys.done(len(tracks)) and tracks.in_flight() == 0:
            # in range order, one task at a time, over every range ready for it (one by
            # one behind the model; on a rerun, all at once)
            while len(tracks) < len(polys) and polys.done(i := len(tracks)):
                hit = cached_track(job, *parts[i], output_of(raw, i), output_of(polys, i), track_before(i))
                if hit is None:
                    break
                tracks.add(Ready(hit))
            ii = tracks.ready(polys, n)
            if ii:
                tracks.add(track_task.submit(q, *cut(ii), outputs(raw, ii), outputs(kept, ii),
                                             outputs(polys, ii), as_parameter(track_before(ii[0])),
                                             wait_for=runs_of(polys, ii)), len(ii))
        # A range is persisted once its whole input is tracked: an object's class is voted over its whole track.
        add_ranges(files, files.ready(tracked, most, frames), lambda i: None,
                   lambda ii: persist_task.submit(q, *cut(ii), outputs(raw, ii), outputs(kept, ii),
                                                  outputs(polys, ii), outputs(tracks, ii), as_parameter(whole(ii)),
                                                  wait_for=runs_of(tracks, ii)),
                   together, PERSIST_IN_FLIGHT - files.tasks_in_flight())
        if sum(map(len, stages)) == submitted:  # nothing new to start: sleep until a task finishes
            if not any(st.in_flight() for st in stages):
                if board.failed:  # seen just now: raised below, in stage order
                    break
                if pending:  # the last ones finished after their next stage was looked at: look again
                    continue
                raise RuntimeError(f"{videos[0].source}: the label pipeline stalled (nothing in flight, nothing to start)")
            board.wait()
    for st in stages:  # after a failure: let the ranges in flight finish, then raise the first, in stage order
        st.wait_all()
    for st in stages:
        st.raise_first_failure()
    return [(output_of(raw, i), output_of(kept, i), output_of(files, i)) for i in range(n)]


class InputTracked:
    """Stands in for the track stage where persist looks: range i counts as done once
    the last range of its input (`last[i]`) is tracked (tracking runs in range order)."""

    def __init__(self, tracks: Stage, last: list[int]) -> None:
        self.tracks, self.last = tracks, last

    def done(self, i: int) -> bool:
        return i < len(self.last) and self.tracks.done(self.last[i])


def model_ranges(job: Job, parts, i: int):
    """Range i's cached raw output, else the ranges of the next model task: range i alone
    (a video's), or up to IMAGES_PER_MODEL_TASK consecutive uncached images."""
    hit = cached_raw(job, *parts[i])
    if hit is not None:
        return hit
    ii = [i]
    while (parts[i][0].kind == "image" and len(ii) < IMAGES_PER_MODEL_TASK and ii[-1] + 1 < len(parts)
           and parts[ii[-1] + 1][0].kind == "image" and cached_raw(job, *parts[ii[-1] + 1]) is None):
        ii.append(ii[-1] + 1)
    return ii


def as_parameter(value):
    """A task parameter (the job, or a list of inputs, ranges or stage outputs) quoted
    for in-process task runners, where Prefect would otherwise walk through all of it
    (settings, model, ontology, every input, every detection) looking for futures, twice
    at every task call: ~10 ms per call for 256 images' outputs. Every value handed on
    is finished already. Dask pickles parameters and hands a quoted value on still
    wrapped, so there it goes as is."""
    runner = getattr(FlowRunContext.get(), "task_runner", None)
    return quote(value) if isinstance(runner, ThreadPoolTaskRunner) else value


RANGES_PER_TASK = 4  # frames of this many full ranges ready together (a rerun) go to one task run
FILTERS_AHEAD = 4  # frames of this many full ranges filtered and not yet polygonized
IMAGES_PER_GROUP = 256  # consecutive images labeled together, as one video's ranges are
IMAGES_PER_MODEL_TASK = 16  # images segmented by one task run (8: 256 JPEGs took 15.4-15.7 s, 16: 13.4-14.2 s)
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
    for group in input_groups(job.videos):
        try:
            started = time.perf_counter()
            done = label_inputs(job, group, progress)
            each = round((time.perf_counter() - started) / len(done), 3)
            for r in done:
                r["seconds"] = each
            results += done
        except Exception as exc:  # reported by name and reason at the end
            if (fatal := output_failed(exc, job.layout.root)) is not None:
                raise fatal from None  # the output folder failed: stop here, every input would
            if len(group) > 1:  # which image? each again on its own (what was done is cached)
                log.warning("a group of %d images failed (%s): labeling them one by one", len(group), exc)
                for video in group:
                    results += label_all(replace(job, videos=(video,), unreadable=(), duplicates=()))
                continue
            log.error("%s failed: %s", group[0].source, exc)
            results.append(failed(group[0].source, f"{type(exc).__name__}: {exc}".splitlines()[0]))
    return results


def input_groups(videos) -> list[list[VideoInfo]]:
    """Each video on its own; consecutive images together, IMAGES_PER_GROUP at most."""
    groups: list[list[VideoInfo]] = []
    for v in videos:
        if v.kind == "image" and groups and groups[-1][-1].kind == "image" and len(groups[-1]) < IMAGES_PER_GROUP:
            groups[-1].append(v)
        else:
            groups.append([v])
    return groups


@flow(name="label", log_prints=True)
@reported
def label_flow(
    inputs: Annotated[list[str], Field(min_length=1)],
    out: str = DEFAULT_OUT,
    settings: PanelSettings = PanelSettings(),
    advanced: AdvancedSettings = AdvancedSettings(),
) -> dict:
    """Label videos and images with an instance-segmentation model into a Parquet table.

    Args:
        inputs: Videos, images, folders, globs or @list files (one path per line), local
            or s3://. A relative path is taken from the worker's working folder.
        out: The output folder of the label table (local or s3://). A relative path is
            taken from the worker's working folder.
        settings: The panel's settings.
        advanced: Tracker, polygon and performance settings.
    """
    settings = LabelSettings.join(settings, advanced)
    job = take_job(inputs, out, settings)  # validated by the CLI already, or now
    get_run_logger().info("labeling %d input(s) with %s on %s", len(job.videos), job.model.model_id, job.device)
    progress = job_progress(job)
    results = label_all(job, progress)
    run = {
        "finished_at": datetime.now(timezone.utc).isoformat(),
        "model_id": job.model.model_id,
        "params_hash": job.params_hash,
        "settings": job.settings.model_dump(),  # with the model's recommendations applied
        "device": str(job.device),
        "ontology": job.ontology.to_json(),
    }
    record_run(job.layout, run, {r["source"]: r for r in results})
    run_recorded(job.layout.manifest, {"out": str(job.layout.root), **run, "inputs": results})
    side_by_side(progress.on_finish, lambda: publish_summary(run, results, str(job.layout.root)))
    summary = {"out": str(job.layout.root), **run, "inputs": results}
    bad = [r for r in results if r["status"] == "failed"]
    if bad:
        names = "; ".join(f"{r['source']} ({r['reason']})" for r in bad)
        raise InputsFailed(f"{len(bad)} of {len(results)} input(s) failed: {names}", summary)
    return summary
