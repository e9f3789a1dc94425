"""Prefect artifacts of a label run: a per-input table, a markdown report, live progress and
the review queue.

`publish_summary` is called by the label flow once its labels are written; it reads
the counts back from the Parquet files it reports on, so the UI shows what is on disk.
`publish_review` publishes the objects and frames a reviewer should check first
(`segflow review` publishes the same tables).
Artifacts are a view: failing to publish one is logged, never fatal to a run.
"""

from __future__ import annotations

import contextvars
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from uuid import UUID

import pyarrow as pa
import pyarrow.compute as pc

from segflow.faults import api_lost
from segflow.progress import Fanout, attached
from segflow.storage.fs import read_table
from segflow.storage.layout import SHARDS

SUMMARY_KEY = "segflow-label-summary"
REPORT_KEY = "segflow-label-report"
PROGRESS_KEY = "segflow-label-progress"
REVIEW_KEY = "review-queue"  # and "review-queue-frames"
REVIEW_TOP = 20  # objects and frames a label run's review artifacts list
REVIEW_MAX_ROWS = 500_000  # a label run ranks its whole table up to this size (~0.2 s per 1000 rows at load 5)
_COLUMNS = ["frame", "object_id", "class_name", "vertex_count"]

log = logging.getLogger(__name__)


# ---- pure: what the artifacts say --------------------------------------------------------


def input_stats(out: str | Path, video_id: str, shard: str | None = None) -> dict[str, Any]:
    """Counts of one input, read from its Parquet files `OUT/<video_id>/*.parquet`, or
    its rows of its shard's file `OUT/shards/<shard>.parquet` (`video_id` the shard's id: the
    whole shard).

    Arrow compute, not pandas: an image dataset asks this of every image (~0.1 ms vs ~1 ms;
    a shard's file is read once, `read_table` keeps it)."""
    files = [Path(out, SHARDS, f"{shard}.parquet")] if shard else sorted(Path(out, video_id).glob("*.parquet"))
    tables = [read_table(p, columns=_COLUMNS + ["video_id"]) for p in files if p.exists()]
    if not tables:
        return _no_stats()
    t = pa.concat_tables(tables)
    if shard and video_id != shard:  # one image of the shard (the shard's id: all of it)
        t = t.filter(pc.equal(t["video_id"], video_id))
    per_class = {str(d["values"]): int(d["counts"]) for d in pc.value_counts(t["class_name"]).to_pylist()}
    return {
        "instances": t.num_rows,
        "objects": pc.count_distinct(t["object_id"]).as_py(),
        "frames_with_instances": pc.count_distinct(t["frame"]).as_py(),
        "per_class": dict(sorted(per_class.items(), key=lambda kv: (-kv[1], kv[0]))),
        "mean_vertices": round(float(pc.mean(t["vertex_count"]).as_py()), 1) if t.num_rows else None,
    }


def _no_stats() -> dict[str, Any]:
    return {"instances": 0, "objects": 0, "frames_with_instances": 0, "per_class": {}, "mean_vertices": None}


def summary_rows(inputs: list[dict], out: str | Path) -> list[dict[str, Any]]:
    """One table row per input: what was labeled, how much, how fast, and what the cache saved."""
    rows = []
    for item in inputs:
        # Failed and duplicate inputs have no video_id and no files: a row of zeros and the reason.
        video_id = item.get("video_id")
        stats = input_stats(out, video_id, item.get("shard")) if video_id else _no_stats()
        frames = int(item.get("frames", 0))
        seconds = item.get("seconds")
        rows.append(
            {
                "input": Path(item["source"]).name,
                "video_id": video_id or "",
                "kind": item.get("kind", ""),
                "status": _status(item),
                "frames": frames,
                "instances": stats["instances"],
                "objects": stats["objects"],
                "per_class": ", ".join(f"{k} {v}" for k, v in stats["per_class"].items()) or "-",
                "mean_vertices": stats["mean_vertices"],
                "frames_per_s": round(frames / seconds, 1) if seconds and not item.get("up_to_date") else None,
                "seconds": round(float(seconds), 2) if seconds is not None else None,
                # Cache hits: frames the model did not have to see, ranges not rewritten.
                "frames_from_cache": frames - int(item.get("frames_segmented", 0)),
                "ranges_reused": int(item.get("ranges", 0)) - int(item.get("files_written", 0)),
                "dropped_unmapped": int(item.get("dropped_unmapped", 0)),
            }
        )
    return rows


def _status(item: dict) -> str:
    status = str(item.get("status", "ok"))
    if status == "ok":
        if item.get("note"):
            return str(item["note"])
        return "up to date" if item.get("up_to_date") else "labeled"
    if status == "duplicate":
        return f"duplicate of {Path(str(item.get('duplicate_of', '?'))).name}"
    reason = item.get("reason")
    return f"{status}: {reason}" if reason else status


def report_markdown(run: dict, rows: list[dict[str, Any]], out: str | Path) -> str:
    """The run's markdown report: output location, model, device, totals and every setting."""
    model_id = str(run.get("model_id", ""))
    name, _, digest = model_id.rpartition("@") if "@" in model_id else (model_id, "", "")
    settings = run.get("settings") or {}
    total_frames = sum(r["frames"] for r in rows)
    total_instances = sum(r["instances"] for r in rows)
    lines = [
        "# segflow label run",
        "",
        f"- **Output**: `{out}`",
        f"- **Model**: `{name}` (weights digest `{digest or '-'}`)",
        f"- **Device**: `{run.get('device', '-')}`",
        f"- **Params hash**: `{run.get('params_hash', '-')}`",
        f"- **Finished**: {run.get('finished_at', '-')}",
        f"- **Totals**: {len(rows)} input(s), {total_frames} frame(s), {total_instances} instance(s), "
        f"{sum(r['frames_from_cache'] for r in rows)} frame(s) from cache",
        "",
        "## Settings",
        "",
        "| setting | value |",
        "|---|---|",
        *[f"| `{k}` | `{_md(v)}` |" for k, v in settings.items()],
        "",
        "## Use the labels",
        "",
        "```",
        f"segflow export {out} --format coco --to coco.json",
        f"segflow preview {out} --to preview/",
        "```",
    ]
    return "\n".join(lines) + "\n"


def _md(value: Any) -> str:
    return "-" if value is None else str(value).replace("|", "\\|")


# ---- publishing ----------------------------------------------------------------------------


def by_shard(inputs: list[dict]) -> list[dict]:
    """The run's inputs with each shard's images as one line (an image dataset's table
    artifact has a row per shard, not per image): frames, cache figures and seconds summed."""
    out: list[dict] = []
    shards: dict[str, dict] = {}
    for item in inputs:
        shard = item.get("shard")
        if not shard:
            out.append(item)
            continue
        line = shards.get(shard)
        if line is None:
            line = shards[shard] = {"source": item["source"], "video_id": shard, "shard": shard, "kind": "shard",
                                    "status": "ok", "images": 0, "frames": 0, "frames_segmented": 0,
                                    "files_written": 0, "dropped_unmapped": 0, "ranges": 1, "seconds": 0.0,
                                    "up_to_date": True}
            out.append(line)
        line["images"] += 1
        if line["images"] > 1:
            line["source"] = f"{line.setdefault('first', Path(line['source']).name)} and {line['images'] - 1} more image(s)"
        for key in ("frames", "frames_segmented", "files_written", "dropped_unmapped", "seconds"):
            line[key] += item.get(key) or 0
        line["up_to_date"] = line["up_to_date"] and bool(item.get("up_to_date"))
    return out


def publish_summary(run: dict, inputs: list[dict], out: str) -> None:
    """Create the run's table artifact (per input) and markdown artifact (settings, model, output).

    `run` is the label flow's run record (model_id, params_hash, settings, device,
    finished_at); `inputs` are `label_video` summaries, optionally with `seconds`.
    """
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    rows = summary_rows(by_shard(inputs), out)
    side_by_side(
        lambda: _safely(create_table_artifact, table=rows, key=SUMMARY_KEY,
                        description=f"Labels per input in {out} ({run.get('model_id', '')})"),
        lambda: _safely(create_markdown_artifact, markdown=report_markdown(run, rows, out), key=REPORT_KEY,
                        description=f"segflow label run into {out}"),
    )


def review_records(objects, frames, top: int) -> dict:
    """The top `top` objects and frames (with priority > 0) of a review queue as records:
    what `segflow review` lists (and `publish_review_queue` publishes)."""
    return {"objects": _records(objects.head(top)), "frames": _records(frames[frames["priority"] > 0].head(top))}


def review_tables(result: dict, top: int, out: str) -> list[tuple[str, list[dict], str]]:
    """The two table artifacts of a review queue's records (`review_records`): (key, rows,
    description) each, a placeholder row where a list is empty (`segflow review` records
    the same through `segflow.runrecord` where it starts no flow run)."""
    return [(REVIEW_KEY, result["objects"] or [{"object_id": "-", "reasons": "no objects"}],
             f"Top {top} objects to review in {out}"),
            (f"{REVIEW_KEY}-frames", result["frames"] or [{"frame": "-", "reasons": "no frames"}],
             f"Top {top} frames to review in {out}")]


def publish_review_queue(objects, frames, top: int, out: str) -> dict:
    """The top `top` objects and frames (with priority > 0) of a review queue (`segflow.review.review_queue`)
    as the table artifacts `review-queue` and `review-queue-frames`; returns both lists as records."""
    from prefect.artifacts import create_table_artifact

    result = review_records(objects, frames, top)
    side_by_side(*(lambda k=key, t=table, d=description: _safely(create_table_artifact, table=t, key=k, description=d)
                   for key, table, description in review_tables(result, top, out)))
    return result


def publish_review(out: str) -> None:
    """A label run's review queue artifacts, of the whole table of `out` (a local folder);
    an object store or a table above REVIEW_MAX_ROWS rows is left to `segflow review`."""
    from segflow.review import queue_of
    from segflow.storage.fs import is_remote, num_rows, stored_path

    root = stored_path(out)
    try:
        if is_remote(root):
            log.info("segflow: review queue not published for an object store: `segflow review` on a local copy")
            return
        rows = sum(num_rows(p) for p in root.glob("*/*.parquet") if not p.parent.name.startswith("."))
        if rows > REVIEW_MAX_ROWS:
            log.info("segflow: review queue not published (%d rows): run `segflow review %s`", rows, out)
            return
        objects, frames = queue_of(root)
    except Exception as exc:  # noqa: BLE001 - a view of the labels: never fatal to the run that wrote them
        log.warning("segflow: could not rank the labels of %s for review: %s", out, exc)
        return
    publish_review_queue(objects, frames, REVIEW_TOP, out)


def _records(df) -> list[dict]:
    return [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()} for r in df.to_dict("records")]


def side_by_side(*calls) -> None:
    """Run API calls in threads at once (each 10-70 ms, mostly waiting), each in a copy
    of this context so an artifact is still linked to the flow run that made it."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        for f in [pool.submit(contextvars.copy_context().run, call) for call in calls]:
            f.result()


UPDATE_EVERY_S = 1.0


class ProgressArtifact:
    """A Prefect progress artifact (0-100 %) fed by the progress callbacks of a label run.

    API calls go out from a thread of its own, in order, so the label flow's loop never
    waits on one (10-70 ms each); `on_finish` waits for them.
    """

    def __init__(self, key: str = PROGRESS_KEY, description: str = "Frames labeled") -> None:
        self.key = key
        self.description = description
        self.total = 0
        self.done = 0
        self.artifact_id: UUID | None = None
        self.updated_at = 0.0
        self.started = False
        self.published: float | None = None  # the percent last handed to the API
        self._sender: ThreadPoolExecutor | None = None

    @property
    def percent(self) -> float:
        """Progress in percent (100 when there is nothing to do)."""
        return 100.0 if self.total <= 0 else min(100.0, 100.0 * self.done / self.total)

    def on_start(self, total: int) -> None:
        """Start counting `total` frames; the artifact itself appears at the first update
        (a second in, or once every frame is segmented), so a sub-second rerun makes one
        API call, not three."""
        self.total, self.done = max(int(total), 0), 0
        self.updated_at = time.monotonic()
        self.started = True

    def on_range_done(self, frames: int) -> None:
        """Add a finished range; update the artifact at most every `UPDATE_EVERY_S`
        (cached ranges finish many per second), and when the count reaches the total."""
        self.done += max(int(frames), 0)
        if time.monotonic() - self.updated_at >= UPDATE_EVERY_S or self.done >= self.total:
            self._update()

    def on_finish(self) -> None:
        """Mark the run complete (100 %) and wait until the API has every update."""
        self.done = max(self.done, self.total)
        self._update()
        if self._sender is not None:
            self._sender.shutdown(wait=True)
            self._sender = None

    def _update(self) -> None:
        self.updated_at = time.monotonic()
        percent = round(self.percent, 2)
        if not self.started or percent == self.published:
            return
        self.published = percent
        if self._sender is None:
            self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segflow-progress")
        # In a copy of this context: the artifact belongs to the flow run calling this.
        self._sender.submit(contextvars.copy_context().run, self._send, percent)

    def _send(self, percent: float) -> None:
        from prefect.artifacts import create_progress_artifact, update_progress_artifact

        if self.artifact_id is None:
            self.artifact_id = _safely(create_progress_artifact, progress=percent, key=self.key,
                                       description=f"{self.description} (of {self.total})")
        else:
            _safely(update_progress_artifact, artifact_id=self.artifact_id, progress=percent)


def job_progress(job) -> Fanout:
    """The label flow's progress reporter: a progress artifact plus any attached CLI bar, started."""
    total = sum(len(r) for video in job.videos for r in job.ranges(video))
    progress = Fanout([ProgressArtifact(), *attached()])
    progress.on_start(total)
    return progress


def _safely(fn, **kwargs):
    # An unreachable API or a rejected artifact must not fail a run whose labels are written.
    if api_lost():  # known gone: each call would wait through the client's retries
        return None
    try:
        return fn(**kwargs)
    except Exception as exc:  # noqa: BLE001 - prefect raises many client/validation types
        log.warning("segflow: could not publish Prefect artifact %s: %s", kwargs.get("key", fn.__name__), exc)
        return None
