"""The `segflow` command line."""

from __future__ import annotations

import os

import sys

import click

from segflow.errors import InputsFailed, SegflowError


# Commands that live next to their flows, imported only when one runs: most import torch
# and torchvision (~2.5 s), which `segflow export` or `segflow --help` need not wait for.
# Their one-line help is here for `--help` (tests/test_refusals.py checks it is theirs).
LAZY_COMMANDS = {
    "demo": ("segflow.demo", "Label the bundled sample with the bundled model and write a preview."),
    "evaluate": ("segflow.flows.evaluate", "Mask AP/AP50 and polygon fidelity of MODEL on held-out data."),
    "export": ("segflow.flows.export",
               "Export the label table in OUT_DIR as COCO, Encord, YouTube-VIS, CVAT or Label Studio."),
    "compare": ("segflow.flows.compare",
                "Mask AP/AP50 and IDF1 of the label table LABELS against REFERENCE, as JSON."),
    "import": ("segflow.flows.imports",
               "Import reviewed labels (COCO, Encord label rows, CVAT XML) into a segflow label table."),
    "preview": ("segflow.flows.preview", "Write overlay videos and contact sheets of the labels in OUT_DIR into --to."),
    "review": ("segflow.flows.review",
               "List the objects and frames of OUT_DIR a reviewer should check first, with reasons."),
    "synth": ("segflow.synth.cli",
              "Write synthetic shapes clips: <name>.mp4, <name>.coco.json, <name>.ytvis.json per seed."),
    "train": ("segflow.training.cli", "Train a Mask R-CNN on labeled frames and write a segflow checkpoint."),
}


class LazyGroup(click.Group):
    """A command group that imports a `LAZY_COMMANDS` command when it is run."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in LAZY_COMMANDS:
            from importlib import import_module

            try:
                self.add_command(getattr(import_module(LAZY_COMMANDS[name][0]), name), name)
            except (ImportError, AttributeError):  # an optional part not installed
                return None
        return self.commands.get(name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from click.utils import make_default_short_help

        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(map(len, names))
        rows = [(n, self.commands[n].get_short_help_str(limit) if n in self.commands
                 else make_default_short_help(LAZY_COMMANDS[n][1], limit)) for n in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="segflow")
def cli() -> None:
    """Automated instance-segmentation labeling as Prefect flows."""


def label_options(fn):
    """The settings panel as flags (shared by `label` and `demo`)."""
    options = [
        click.option("--model", default="shapes-demo", show_default=True, help="Registered model name or checkpoint path."),
        click.option("--start-frame", type=int, default=0, show_default=True, help="First frame (inclusive)."),
        click.option("--end-frame", type=int, default=None, help="Last frame (inclusive); default: the last frame."),
        click.option("--confidence", type=float, default=0.6, show_default=True, help="Keep instances scoring at least this [0, 1]."),
        click.option("--coarseness", type=float, default=0.005, show_default=True, help="RDP tolerance as a fraction of the longer side [0, 0.1]."),
        click.option("--iou-threshold", type=float, default=0.3, show_default=True, help="Mask IoU above which the lower-scored instance is deleted [0, 1]."),
        click.option("--class-agnostic-nms/--per-class-nms", default=None,
                     help="Let different classes suppress each other  [default: the model's recommended "
                     "setting (from its checkpoint metadata: class-agnostic for shapes-demo), else per class]"),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
        click.option("--cpu-fallback", is_flag=True, help="After the GPU retries fail, segment that range on the CPU."),
        click.option("--tracking/--no-tracking", default=True, show_default=True, help="One object_id per instance across frames."),
        click.option("--ontology", default=None, help="Ontology JSON mapping model classes to objects."),
        click.option("--track-buffer", type=int, default=30, show_default=True, help="Frames a lost track waits."),
        click.option("--match-iou", type=float, default=0.2, show_default=True, help="Minimum mask IoU to continue a track."),
        click.option("--min-track-length", type=int, default=1, show_default=True, help="Frames before a track can be re-identified."),
        click.option("--track-low-score", type=float, default=0.1, show_default=True, help="Score floor of the tracker's low-score pass."),
        click.option("--reid-gate", type=float, default=1.0, show_default=True, help="Re-identification radius in object sizes (0 = off)."),
        click.option("--track-class-penalty", type=float, default=None,
                     help="IoU a cross-class match gives up (1 = strict)  [default: 0.3; 0.05 with --class-agnostic-nms]"),
        click.option("--min-area", type=float, default=16.0, show_default=True, help="Drop polygon parts/holes below this many px^2."),
        click.option("--precision", default="auto", show_default=True,
                     help="auto, fp32 or mixed (float16 autocast + channels_last on a GPU; auto = mixed on a GPU, fp32 on the CPU)."),
        click.option("--batch-size", type=int, default=None,
                     help="Frames per model call  [default: 4 on a GPU, 2 on the CPU]"),
        click.option("--frames-per-range", type=int, default=64, show_default=True, help="Frames per cached Parquet file."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def run_label(
    inputs: list[str], out: str, runner: str = "threads", dask_address: str | None = None, dask_workers: int = 2, **settings
) -> dict:
    """Validate everything (nothing written on error), then run the label flow."""
    from segflow.job import prepare_job, remember_job
    from segflow.settings import make_settings

    checked = make_settings(**settings)
    remember_job(list(inputs), out, checked, prepare_job(list(inputs), out, checked))
    with _without_heartbeats():
        return _label_flow(runner, dask_address, dask_workers)(inputs=list(inputs), out=out, **settings)


_FLOWS: dict[tuple, object] = {}


def _label_flow(runner: str, dask_address: str | None, dask_workers: int):
    """The label flow with this task runner, built once per process (`with_options`
    rebuilds the flow's parameter schema: ~0.1 s of CPU a run). Prefect starts a fresh
    copy of the task runner for every run.

    `run_label` has validated every parameter already (`make_settings`, `prepare_job`),
    so Prefect's own validation (a pydantic model built per run, ~9 ms) is off here, and
    the return value is not persisted (Prefect's default) without asking the server
    for its default result storage each run; deployments run `label_flow` as declared."""
    from segflow.flows.label import label_flow
    from segflow.runners import make_task_runner

    key = (runner, dask_address, dask_workers)
    if key not in _FLOWS:
        _FLOWS[key] = label_flow.with_options(
            task_runner=make_task_runner(runner, dask_address, dask_workers), validate_parameters=False,
            persist_result=False,
        )
    return _FLOWS[key]


def _without_heartbeats():
    """A Prefect settings context with flow-run heartbeats off.

    Heartbeats only serve zombie detection for worker-run deployments, and Prefect
    joins their 1 s sleep at the end of every run. (`temporary_settings` re-reads every
    settings source, 30-190 ms a run; a copy of the current settings costs nothing.)
    """
    from prefect.context import SettingsContext, get_settings_context

    ctx = get_settings_context()
    flows = ctx.settings.flows.model_copy(update={"heartbeat_frequency": None})
    return SettingsContext(profile=ctx.profile, settings=ctx.settings.model_copy(update={"flows": flows}))


@cli.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--out", required=True, help="Output folder for the Parquet label table.")
@click.option("--runner", type=click.Choice(["threads", "dask"]), default="threads", show_default=True,
              help="Task runner: threads in this process, or a Dask cluster.")
@click.option("--dask-address", default=None, help="Scheduler of an existing Dask cluster (default: start a local one).")
@click.option("--dask-workers", type=int, default=2, show_default=True, help="Workers of the local Dask cluster.")
@label_options
def label(inputs: tuple[str, ...], out: str, **settings) -> None:
    """Label videos, images, folders or globs into OUT (one Parquet file per frame range).

    A list file of paths can be given as @FILE. In a dataset, an input that cannot be
    read or decoded is reported at the end (exit status 1) and the others are labeled.
    """
    from segflow.progress import ProgressBar, attach

    try:
        with attach(ProgressBar()):
            result = run_label(list(inputs), out, **settings)
    except InputsFailed as exc:
        _print_summary(exc.summary)
        raise
    _print_summary(result)


def _print_summary(result: dict) -> None:
    """The dataset summary: every input with its status, frames and instances; past
    LISTED_INPUTS labeled inputs, those as one total line (each is in the manifest)."""
    ok = [item for item in result["inputs"] if item["status"] == "ok"]
    for item in result["inputs"]:
        if item["status"] == "duplicate":
            click.echo(f"skipped {item['source']}: duplicate of {item['duplicate_of']}")
        elif item["status"] != "ok":
            click.echo(f"FAILED {item['source']}: {item['reason']}")
        elif len(ok) <= LISTED_INPUTS:
            state = "up to date" if item["up_to_date"] else f"{item['frames_segmented']} frames segmented"
            click.echo(
                f"ok {item['source']}: {item['frames']} frames, {item['instances']} instances, "
                f"{state}, {item['files_written']} file(s) written"
            )
    if len(ok) > LISTED_INPUTS:
        total = {k: sum(item[k] for item in ok) for k in ("frames", "instances", "frames_segmented", "files_written")}
        click.echo(
            f"ok {len(ok)} inputs: {total['frames']} frames, {total['instances']} instances, "
            f"{total['frames_segmented']} frames segmented, {total['files_written']} file(s) written, "
            f"{sum(item['up_to_date'] for item in ok)} up to date (each: {result['out']}/.segflow/manifest.json)"
        )
    click.echo(f"labels: {result['out']}  model: {result['model_id']}  params: {result['params_hash']}")


LISTED_INPUTS = 20  # labeled inputs listed one per line; more are summed up in one line


@cli.command()
@click.option("--inbox", default="inbox", show_default=True, help="Folder the label-inbox deployment watches.")
@click.option("--out", default="labels", show_default=True, help="Output folder of the deployments.")
@click.option("--cron", default="*/15 * * * *", show_default=True, help="Schedule of label-inbox.")
def serve(inbox: str, out: str, cron: str) -> None:
    """Serve the deployments (label-dataset, label-inbox, relabel) from this process.

    The no-infrastructure alternative to `prefect deploy --all` + a worker: runs
    triggered from the UI or API execute here until stopped.
    """
    from prefect import serve as prefect_serve

    from segflow.flows.inbox import label_inbox_flow
    from segflow.flows.label import label_flow
    from segflow.flows.relabel import relabel_flow

    prefect_serve(
        label_flow.to_deployment("label-dataset", parameters={"inputs": [], "out": out}, enforce_parameter_schema=True),
        label_inbox_flow.to_deployment("label-inbox", cron=cron, parameters={"inbox": inbox, "out": out}),
        relabel_flow.to_deployment("relabel", parameters={"out": out}),
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point: every user error becomes one line on stderr and exit status 2."""
    if not os.environ.get("PREFECT_API_URL"):
        # The temporary server Prefect starts would report anonymous usage at start-up,
        # and print an ERROR line wherever there is no internet.
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    try:
        cli.main(args=argv, prog_name="segflow", standalone_mode=False)
    except InputsFailed as exc:  # the good inputs were labeled; the run still failed
        click.echo(f"segflow: error: {exc}", err=True)
        return 1
    except SegflowError as exc:
        click.echo(f"segflow: error: {exc}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("segflow: aborted", err=True)
        return 130
    except click.ClickException as exc:
        click.echo(f"segflow: error: {exc.format_message()}", err=True)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
