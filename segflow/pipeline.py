"""The one scheduler: runs the stages a flow declares (`StageSpec`s) over every frame range.

For each range and stage it computes the key once (`spec.key`, from the stage's small
config and the keys of the outputs it reads), probes the cache once (`spec.cached`),
and hands the misses to the stage's task in batches (`Work`: key, path and inputs), as
soon as their inputs are done. Each range moves through the stages on its own: while
the model segments the next ranges, finished ones are filtered, polygonized, tracked (in
range order: ids continue from the range before) and persisted beside it. Work in flight
is bounded per stage; a loop with nothing in flight and nothing to start is a stall.

Inputs are labeled one video at a time; images in shards (`segflow.shards`: each shard
one input of one range, its images' rows together in each stage's file), a few shards
at a time. A failing group of shards is labeled again shard by shard, a failing shard
image by image (shards of one), so the bad image is reported alone.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, replace

from prefect import get_run_logger
from prefect.context import FlowRunContext
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from segflow.board import Board, Ready, Stage, WholeInput, add_ranges, output_of, runs_of
from segflow.contracts import FrameRange, StageOutput, StageSpec, VideoInfo, Work
from segflow.faults import output_failed
from segflow.progress import NO_PROGRESS, Fanout
from segflow.shards import make_shard, shards_of
from segflow.storage.housekeeping import cache_names, prune_inputs
from segflow.storage.layout import count_label_rows, count_shard_rows, remove_stale_labels, remove_stale_shards

SHARDS_PER_GROUP = 16  # shards labeled together (the model segments one while the next stages finish another)


@dataclass(frozen=True)
class Pipeline:
    """A planning task (`plan(config, videos) -> each input's frame ranges`, its config
    from `plan_config(job)`), then the stages, in order. The last stage's key and file
    depend on the range alone (the label file): an input whose every range has it is
    up to date and goes no further."""

    plan: object
    plan_config: object
    stages: tuple[StageSpec, ...]


def label_all(job, pipeline: Pipeline, progress: Fanout = NO_PROGRESS) -> list[dict]:
    """Label every input of `job`; one input's failure (after its retries) never stops the others."""
    results = [failed(src, reason) for src, reason in job.unreadable]
    results += [{"source": src, "status": "duplicate", "duplicate_of": of, "frames": 0, "instances": 0}
                for src, of in job.duplicates]
    for group in input_groups(job.videos, job.settings.images_per_shard):
        results += label_group(job, pipeline, group, progress)
    return results


def label_group(job, pipeline: Pipeline, group: list[VideoInfo], progress: Fanout = NO_PROGRESS) -> list[dict]:
    """Label one video, or a group of shards; a failing group again part by part (what
    was done is cached): shard by shard, then a failing shard's images one by one."""
    try:
        started = time.perf_counter()
        done = label_inputs(job, pipeline, group, progress)
        each = round((time.perf_counter() - started) / len(done), 3)
        for r in done:
            r["seconds"] = each
        return done
    except Exception as exc:  # reported by name and reason at the end
        if (fatal := output_failed(exc, job.layout.root)) is not None:
            raise fatal from None  # the output folder failed: stop here, every input would
        parts = [[v] for v in group] if len(group) > 1 else \
            [[make_shard([m])] for m in group[0].members] if len(group[0].members) > 1 else None
        if parts is not None:
            images = sum(len(v.inputs) for v in group)
            get_run_logger().warning("%d image(s) failed together (%s): labeling them in %d parts", images, exc,
                                     len(parts))
            return [r for part in parts for r in label_group(job, pipeline, part)]
        get_run_logger().error("%s failed: %s", group[0].inputs[0].source, exc)
        return [failed(group[0].inputs[0].source, f"{type(exc).__name__}: {exc}".splitlines()[0])]


def kept_in_cache(stages: tuple[StageSpec, ...], video: VideoInfo, outputs: list[StageOutput]) -> list[StageOutput]:
    """The cache files a range's label file is made from (its outputs of every stage but
    the last), less those a shard's label file holds itself (`shard_cache_in_labels`)."""
    return [o for spec, o in zip(stages[:-1], outputs[:-1])
            if not (video.kind == "shard" and spec.shard_cache_in_labels)]


def input_groups(videos, images_per_shard: int) -> list[list[VideoInfo]]:
    """Each video on its own, then the images' shards, `SHARDS_PER_GROUP` at a time."""
    images = [v for v in videos if v.kind == "image"]
    groups: list[list[VideoInfo]] = [[v] for v in videos if v.kind != "image"]
    shards = shards_of(images, images_per_shard)
    groups += [shards[lo:lo + SHARDS_PER_GROUP] for lo in range(0, len(shards), SHARDS_PER_GROUP)]
    return groups


def label_inputs(job, pipeline: Pipeline, videos: list[VideoInfo], progress: Fanout = NO_PROGRESS) -> list[dict]:
    """Run the stages over one video, or a group of shards; a summary per input (a shard's: per image)."""
    decoded = pipeline.plan.submit(as_parameter(pipeline.plan_config(job)), as_parameter(videos))
    planned = decoded.result()
    run = _Run(job, pipeline.stages, decoded, progress)
    todo = []  # inputs with a range to (re)do
    for video, rr in zip(videos, planned):
        if run.add_input(video, rr):
            todo.append((video, rr))
        else:
            progress.on_range_done(sum(len(r) for r in rr))
    outputs = run.run() if todo else []
    counts = {m.video_id: dict(frames_segmented=0, files_written=0, dropped_unmapped=0)
              for v, _ in todo for m in v.inputs}
    for (video, _), out in zip(run.parts, outputs):
        if video.kind == "shard":  # each image its own counts; the shard's label file counted once
            for n, m in enumerate(video.members):
                c = counts[m.video_id]
                c["frames_segmented"] += out[0].per_member[n] if out[0].per_member else 0
                c["dropped_unmapped"] += out[1].per_member[n] if out[1].per_member else 0
            counts[video.members[0].video_id]["files_written"] += not out[-1].cached
            continue
        c = counts[video.video_id]
        c["frames_segmented"] += sum(o.frames_run for o in out)
        c["dropped_unmapped"] += sum(o.dropped_unmapped for o in out)
        c["files_written"] += not out[-1].cached
    made = [(video, cache_names(kept_in_cache(pipeline.stages, video, out)))
            for (video, _), out in zip(run.parts, outputs)]
    return wrap_up(job, videos, planned, todo, made, counts)


def wrap_up(job, videos: list[VideoInfo], planned: list[list[FrameRange]], todo: list, made: list,
            counts: dict[str, dict]) -> list[dict]:
    """After a group's stages: its stale label files and unreachable cache files removed,
    and each input's summary. `todo`: the (video, ranges) that were run, `made`: each run
    part with the cache files its label file was made from, `counts`: per run input id."""
    for video, rr in todo + [(v, rr) for v, rr in zip(videos, planned) if v.kind == "video" and not rr]:
        if video.kind != "shard":  # a video with no frames in range keeps no label file either
            remove_stale_labels(job.layout, video.video_id, rr)
    shards = [v for v in videos if v.kind == "shard"]
    gone = remove_stale_shards(job.layout, shards) if shards else []
    prune_inputs(job.layout, made, gone)
    results = []
    for v, rr in zip(videos, planned):
        if v.kind != "shard":
            results.append(summarize(job, v, rr, up_to_date=v.video_id not in counts, **counts.get(v.video_id, {})))
            continue
        rows = count_shard_rows(job.layout, v)
        results += [summarize(job, m, rr, up_to_date=m.video_id not in counts, instances=rows.get(m.video_id, 0),
                              shard=v.video_id, **counts.get(m.video_id, {})) for m in v.members]
    return results


def served_by_cache(job, pipeline: Pipeline) -> list[dict] | None:
    """Every input's summary when each of its ranges has its label file for these settings
    already (nothing to run: the plan, keys and cache probes the flow makes, without
    Prefect), else None. The same housekeeping as a run's (`wrap_up`); a job with an
    unreadable input returns None (the run reports it)."""
    if job.unreadable:
        return None
    results = []
    for group in input_groups(job.videos, job.settings.images_per_shard):
        started = time.perf_counter()
        planned = pipeline.plan.fn(pipeline.plan_config(job), group)
        spec = pipeline.stages[-1]
        config = spec.config(job)
        for video, rr in zip(group, planned):
            for rng in rr:  # up to the first miss: a run with work to do probes one range twice, no more
                if spec.cached(config, keyed(spec, config, job.layout, Work(video, rng))) is None:
                    return None
        results.append((group, planned, time.perf_counter() - started))
    summaries = [{"source": src, "status": "duplicate", "duplicate_of": of, "frames": 0, "instances": 0}
                 for src, of in job.duplicates]
    for group, planned, seconds in results:
        started = time.perf_counter()
        done = wrap_up(job, group, planned, [], [], {})
        for r in done:  # as `label_group` times a group
            r["seconds"] = round((seconds + time.perf_counter() - started) / len(done), 3)
        summaries += done
    return summaries


def label_files(spec: StageSpec, config, layout, video: VideoInfo, ranges: list[FrameRange]) -> list[tuple]:
    """Each range's `Work` for the last stage (its label file, keyed) and that file's cache
    probe (None: missing, or made with other settings)."""
    works = [keyed(spec, config, layout, Work(video, r)) for r in ranges]
    return [(w, spec.cached(config, w)) for w in works]


class _Run:
    """The ranges of one video or image group moving through the stages."""

    def __init__(self, job, specs: tuple[StageSpec, ...], decoded, progress: Fanout) -> None:
        self.layout, self.specs, self.decoded, self.progress = job.layout, specs, decoded, progress
        self.configs = [spec.config(job) for spec in specs]
        self.fpr = job.settings.frames_per_range
        self.parts: list[tuple[VideoInfo, FrameRange]] = []
        self.board = Board()
        self.stages = [Stage(self.board) for _ in specs]
        self.works: list[dict[int, Work]] = [{} for _ in specs]  # each range's Work, keyed once
        self.hits: list[dict[int, StageOutput | None]] = [{} for _ in specs]  # each range's cache probe, once
        self.warmed = False  # the stages' `warm_up` called (once the model runs)

    def add_input(self, video: VideoInfo, ranges: list[FrameRange]) -> bool:
        """Add an input's ranges unless every range's last output (its label file) is there
        already (probed here, once); returns whether they were added."""
        k = len(self.specs) - 1
        probed = label_files(self.specs[k], self.configs[k], self.layout, video, ranges)
        if all(hit is not None for _, hit in probed):
            return False
        for w, hit in probed:
            self.works[k][len(self.parts)], self.hits[k][len(self.parts)] = w, hit
            self.parts.append((video, w.rng))
        return True

    def run(self) -> list[list[StageOutput]]:
        """Every range through every stage; each range's outputs, in stage order."""
        n, stages = len(self.parts), self.stages
        while not (len(stages[-1]) == n and stages[-1].in_flight() == 0) and not self.board.failed:
            self.board.arm()
            submitted = sum(map(len, stages))
            pending = sum(st.in_flight() for st in stages)  # a task finishing while we look is seen below
            for k in range(len(stages)):
                self._advance(k)
            if sum(map(len, stages)) == submitted:  # nothing new to start: sleep until a task finishes
                if not any(st.in_flight() for st in stages):
                    if self.board.failed:  # seen just now: raised below, in stage order
                        break
                    if pending:  # the last ones finished after their next stage was looked at: look again
                        continue
                    raise RuntimeError(f"{self.parts[0][0].source}: the label pipeline stalled "
                                       "(nothing in flight, nothing to start)")
                self.board.wait()
        for st in stages:  # after a failure: let the ranges in flight finish, then raise the first, in stage order
            st.wait_all()
        for st in stages:
            st.raise_first_failure()
        return [[output_of(st, i) for st in stages] for i in range(n)]

    def _advance(self, k: int) -> None:
        """Start stage k's next ranges that its policy allows."""
        spec, st = self.specs[k], self.stages[k]
        limit = spec.tasks_in_flight(self.configs[k]) if callable(spec.tasks_in_flight) else spec.tasks_in_flight
        if k == 0:  # the model's queue: ranges in order, behind the planning task only
            while len(st) < len(self.parts) and (limit is None or st.tasks_in_flight() < limit):
                i = len(st)
                hit = self._probe(0, i)
                if hit is not None:
                    st.add(Ready(hit))
                else:
                    ii = self._model_batch(i)
                    st.add(self._submit(0, ii), len(ii))
                    self._warm_up()
            return
        if spec.in_order and st.in_flight():
            return
        most = spec.ranges_per_task * self.fpr if spec.ranges_per_task is not None else math.inf
        if spec.ranges_ahead is not None and k + 1 < len(self.specs):
            ahead = spec.ranges_ahead * self.fpr - sum(map(self._frames, range(len(self.stages[k + 1]), len(st))))
            most = min(most, ahead)
        upstream = self.stages[k - 1]
        if spec.whole_input:
            last = {v.video_id: i for i, (v, _) in enumerate(self.parts)}  # each input's last range
            upstream = WholeInput(upstream, [last[v.video_id] for v, _ in self.parts])
        todo = st.ready(upstream, most, self._frames)
        if spec.counts_progress and todo:
            self.progress.on_range_done(sum(map(self._frames, todo)))
        together = self._together if spec.with_model_task else (lambda i, j: True)
        tasks = 1 if spec.in_order else None if limit is None else limit - st.tasks_in_flight()
        add_ranges(st, todo, lambda i: self._probe(k, i), lambda ii: self._submit(k, ii), together, tasks)

    def _warm_up(self) -> None:
        """Once the model runs: each stage's `warm_up` (its one-time set-up, beside the model's work)."""
        if not self.warmed:
            self.warmed = True
            for spec, config in zip(self.specs, self.configs):
                if spec.warm_up is not None:
                    spec.warm_up(config)

    def _model_batch(self, i: int) -> list[int]:
        """Range i and the next uncached ones its model task takes: up to `ranges_per_task` ranges' frames."""
        spec, ii = self.specs[0], [i]
        most = spec.ranges_per_task * self.fpr if spec.ranges_per_task is not None else math.inf
        while (j := ii[-1] + 1) < len(self.parts) and self._probe(0, j) is None:
            if sum(map(self._frames, ii)) + self._frames(j) > most:
                break
            ii.append(j)
        return ii

    def _submit(self, k: int, ii: list[int]):
        spec, config = self.specs[k], self.configs[k]
        task = spec.task_for(config) if spec.task_for is not None else spec.task
        # Done already: waiting for them costs nothing, and the Prefect UI draws the edges.
        wait_for = [self.decoded] if k == 0 else runs_of(self.stages[k - 1], ii)
        works = [replace(self._work(k, i), **self._inputs(k, i)) for i in ii]  # the label file's was keyed early
        return task.submit(as_parameter(config), as_parameter(works), wait_for=wait_for)

    def _probe(self, k: int, i: int) -> StageOutput | None:
        if i not in self.hits[k]:
            self.hits[k][i] = self.specs[k].cached(self.configs[k], self._work(k, i))
        return self.hits[k][i]

    def _work(self, k: int, i: int) -> Work:
        """Range i's `Work` for stage k (its inputs done), keyed once."""
        if i not in self.works[k]:
            spec = self.specs[k]
            video, rng = self.parts[i]
            previous = None
            if spec.in_order and i and self.parts[i - 1][0].video_id == video.video_id:
                before = self.works[k][i - 1]  # keyed before range i: ids continue from it
                previous = self.hits[k].get(i - 1) or StageOutput(before.path, before.key, cached=False)
            self.works[k][i] = self._keyed(k, Work(video, rng, previous=previous, **self._inputs(k, i)))
        return self.works[k][i]

    def _inputs(self, k: int, i: int) -> dict:
        """Range i's outputs of the earlier stages that stage k reads (done), and for a
        `whole_input` stage those of every range of its input (`Work.whole`)."""
        spec = self.specs[k]
        found = {s.name: j for j, s in enumerate(self.specs[:k]) if s.name in spec.reads}
        inputs: dict = {name: output_of(self.stages[j], i) for name, j in found.items()}
        if spec.whole_input:
            video_id = self.parts[i][0].video_id
            inputs["whole"] = tuple(tuple(output_of(self.stages[found[name]], r) for name in spec.reads)
                                    for r, (v, _) in enumerate(self.parts) if v.video_id == video_id)
        return inputs

    def _keyed(self, k: int, work: Work) -> Work:
        return keyed(self.specs[k], self.configs[k], self.layout, work)

    def _frames(self, i: int) -> int:
        return len(self.parts[i][1])

    def _together(self, i: int, j: int) -> bool:
        # Ranges from the cache go on together; those the model made in this run go on
        # with their own model task's ranges only, as soon as it is done.
        a, b = self.stages[0][i], self.stages[0][j]
        return a is b or (isinstance(a, Ready) and isinstance(b, Ready))


def keyed(spec: StageSpec, config, layout, work: Work) -> Work:
    """`work` with its key for stage `spec` and the path of the file it writes in `layout`."""
    work = replace(work, key=spec.key(config, work))
    return replace(work, path=str(spec.where(layout, work)))


def as_parameter(value):
    """A task parameter (a stage's config, or a list of inputs or `Work`) quoted for
    in-process task runners, where Prefect would otherwise walk through all of it (every
    input, every stage output) looking for futures, twice at every task call. Every value
    handed on is finished already. Dask pickles parameters and hands a quoted value on
    still wrapped, so there it goes as is."""
    runner = getattr(FlowRunContext.get(), "task_runner", None)
    return quote(value) if isinstance(runner, ThreadPoolTaskRunner) else value


def summarize(job, video: VideoInfo, ranges: list[FrameRange], up_to_date: bool = False, instances: int | None = None,
              shard: str | None = None, **counts) -> dict:
    """One input's line in the run summary (an image of a shard: `instances` counted
    already, `ranges` its shard's one); a video with no frames in range (a dataset's video
    shorter than the start frame) says so in `note`."""
    st = os.stat(video.local or video.source)
    note = {"note": f"no frames in range (--start-frame={job.settings.start_frame}; "
                    f"frames 0 to {video.frame_count - 1})"} if video.kind == "video" and not ranges else {}
    return ({"shard": shard} if shard else {}) | note | {
        "source": video.source,
        "video_id": video.video_id,
        "kind": video.kind,
        "status": "ok",
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "params_hash": job.params_hash,
        "frames": 1 if shard else sum(len(r) for r in ranges),
        "ranges": len(ranges),
        "instances": count_label_rows(job.layout, video.video_id, ranges) if instances is None else instances,
        "frames_segmented": counts.get("frames_segmented", 0),
        "files_written": counts.get("files_written", 0),
        "dropped_unmapped": counts.get("dropped_unmapped", 0),
        "up_to_date": up_to_date,
    }


def failed(source: str, reason: str) -> dict:
    """The summary line of an input that could not be labeled."""
    return {"source": source, "status": "failed", "reason": reason, "frames": 0, "instances": 0}
