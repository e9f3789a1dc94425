"""The label flow: decode -> segment -> filter -> polygonize -> track -> persist.

Every stage runs once per frame range (not per frame) and hands on the path of its
cached output, so a rerun redoes only what changed settings touch: the model runs only
for ranges whose raw output is missing. Each stage is declared in `tasks/<stage>.py`
(a `StageSpec`: its key, batching and in-flight policy); `segflow/pipeline.py` runs them.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Annotated

from prefect import flow, get_run_logger
from pydantic import Field

from segflow.artifacts import job_progress, publish_review, publish_summary, side_by_side
from segflow.errors import InputsFailed
from segflow.faults import run_recorded
from segflow.flowrun import reported
from segflow.job import Job, take_job
from segflow.pipeline import Pipeline, label_all
from segflow.settings import DEFAULT_OUT, AdvancedSettings, LabelSettings, PanelSettings
from segflow.storage.manifest import record_run
from segflow.tasks import decode, persist, polygonize, segment, track
from segflow.tasks import filter as filter_  # (`filter` is a builtin)

LABEL = Pipeline(
    plan=decode.decode_task, plan_config=decode.decode_config,  # 1. decode: each input's frame ranges
    stages=(
        segment.STAGE,  # 2. segment: the model's raw instances (masks as RLE), ranges in order
        filter_.STAGE,  # 3. filter: confidence, mask NMS, ontology mapping
        polygonize.STAGE,  # 4. polygonize: outlines traced and simplified
        track.STAGE,  # 5. track: object ids across frames, ranges in order
        persist.STAGE,  # 6. persist: one Parquet file of the label table per range
    ),
)


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
    results = label_all(job, LABEL, progress)
    summary = record_label_run(job, results)
    run_recorded(job.layout.manifest, summary)
    run = {k: v for k, v in summary.items() if k not in ("out", "inputs")}
    side_by_side(progress.on_finish, lambda: publish_summary(run, results, str(job.layout.root)),
                 lambda: publish_review(str(job.layout.root)))  # the review queue, as `segflow review` lists it
    bad = [r for r in results if r["status"] == "failed"]
    if bad:
        names = "; ".join(f"{r['source']} ({r['reason']})" for r in bad)
        raise InputsFailed(f"{len(bad)} of {len(results)} input(s) failed: {names}", summary)
    return summary


def record_label_run(job: Job, results: list[dict]) -> dict:
    """Record a label run's settings and each input's summary in the output's manifest;
    returns the run's summary (`out`, the run's record, `inputs`). The flow's, and that of
    a CLI rerun the cache serves whole (`segflow.pipeline.served_by_cache`: no flow run)."""
    run = {
        "finished_at": datetime.now(timezone.utc).isoformat(),
        "model_id": job.model.model_id,
        "params_hash": job.params_hash,
        "settings": job.settings.model_dump(),  # with the model's recommendations applied
        "device": str(job.device),
        "ontology": job.ontology.to_json(),
    }
    record_run(job.layout, run, {r["source"]: r for r in results})
    return {"out": str(job.layout.root), **run, "inputs": results}
