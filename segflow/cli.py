"""The `segflow` command line."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable

import click

from segflow.errors import InputsFailed, SegflowError
from segflow.settings import DEFAULT_INBOX, DEFAULT_INBOX_OUT, DEFAULT_OUT, INBOX_CONCURRENCY, INBOX_CRON


# Commands that live next to their flows, imported only when one runs: most import torch
# and torchvision (~2.5 s), which `segflow export` or `segflow --help` need not wait for.
# Their one-line help is here for `--help` (tests/test_refusals.py checks it is theirs).
LAZY_COMMANDS = {
    "cache": ("segflow.cachecmd", "Show the size of an output folder's label table and caches; --prune removes unreachable cache files."),
    "demo": ("segflow.demo", "Label the bundled sample with the bundled model and write a preview."),
    "evaluate": ("segflow.flows.evaluate", "Mask AP/AP50 and polygon fidelity of MODEL on held-out data."),
    "export": ("segflow.tablecmds",
               "Export the label table in LABELS (a label run's --out folder) as COCO, Encord, YouTube-VIS, CVAT or Label Studio."),
    "compare": ("segflow.flows.compare",
                "Mask AP/AP50 and IDF1 of the label table LABELS against REFERENCE, as JSON."),
    "import": ("segflow.flows.imports",
               "Import reviewed labels (COCO, Encord label rows, CVAT XML) into a segflow label table."),
    "preview": ("segflow.tablecmds", "Write overlay videos and contact sheets of the labels in LABELS into --to."),
    "review": ("segflow.tablecmds",
               "List the objects and frames of LABELS a reviewer should check first, with reasons."),
    "server": ("segflow.server", "A local Prefect server that later segflow commands use (start, stop, status)."),
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
        names = self.list_commands(ctx)
        # each command's whole first line (click would cut it at ~45 characters with "...")
        rows = [(n, (self.commands[n].help or "").split("\n")[0] if n in self.commands else LAZY_COMMANDS[n][1])
                for n in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="segflow")
def cli() -> None:
    """Automated instance-segmentation labeling as Prefect flows."""


def label_options(fn):
    """The settings as flags (shared by `label` and `demo`), made from `segflow.settings`:
    each flag's help is the setting's description, its default the setting's default."""
    from segflow.settings import choices_of, flag_of, setting_fields, summary_of, unset_text

    options = []
    for name, f in setting_fields().items():
        flag, kind = flag_of(name), _value_type(f.annotation)
        help_text = summary_of(name)
        unset = unset_text(name)
        if unset:
            help_text += f"  [default: {unset}]"
        if kind is bool:
            options.append(click.option(flag, name, is_flag=True, default=f.default,
                                        show_default=unset is None and "/" in flag, help=help_text))
            continue
        choices = choices_of(name)
        param_type = click.Choice(choices) if choices else {int: int, float: float}.get(kind, str)
        options.append(click.option(flag, name, type=param_type, default=f.default, show_default=unset is None,
                                    help=help_text))
    for option in reversed(options):
        fn = option(fn)
    return fn


def _value_type(annotation):
    from segflow.settings import _value_type as value_type

    return value_type(annotation)


def run_label(
    inputs: list[str], out: str, runner: str = "threads", dask_address: str | None = None, dask_workers: int = 2,
    before_flow: Callable[[], None] | None = None, **settings
) -> dict:
    """Validate everything (nothing written on error), then run the label flow, calling
    `before_flow()` first; a rerun the cache serves whole runs none (`_served_by_cache`)."""
    from segflow.faults import quiet_prefect_failures
    from segflow.job import prepare_job, remember_job
    from segflow.settings import make_settings

    checked = make_settings(**settings)
    job = prepare_job(list(inputs), out, checked)
    done = _served_by_cache(job)
    if done is not None:
        return done
    remember_job(list(inputs), out, checked, job)
    if before_flow is not None:
        before_flow()
    quiet_prefect_failures()  # a failure segflow reports in one line is not also a traceback
    flow = _label_flow(runner, dask_address, dask_workers)
    if _ABORT_ON_SIGNALS:
        from segflow.faults import abort_on_signals

        abort_on_signals()  # Ctrl-C and SIGTERM: one line, exit 130 / 143 within seconds (Prefect's too)
    with flow_context():
        panel, advanced = checked.split()
        return flow(inputs=list(inputs), out=out, settings=panel, advanced=advanced)


def _served_by_cache(job) -> dict | None:
    """A rerun with nothing to do: every input's label files are there for these settings
    (the flow's own plan, keys and probes: `segflow.pipeline.served_by_cache`). Its summary
    is recorded in the manifest and returned as the flow's would be, without a flow run
    (nor a temporary Prefect server); None: there is work, the flow runs."""
    from segflow.flows.label import LABEL, record_label_run
    from segflow.pipeline import served_by_cache

    results = served_by_cache(job, LABEL)
    return None if results is None else record_label_run(job, results)


_ABORT_ON_SIGNALS = False  # set by `main` for `segflow label` (a Python caller keeps its own handlers)

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


def flow_context():
    """A Prefect settings context with flow-run heartbeats off, for every flow run of a
    command (`main` enters it, or the command where it may run no flow: `run_label`, also
    for the Python API, and `run_export`).

    Heartbeats only serve zombie detection for worker-run deployments, and Prefect
    joins their 1 s sleep at the end of every run (0.55 s of a 1.8 s `segflow export`). (`temporary_settings` re-reads every
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
    from segflow.faults import api_lost_exit, watch_api
    from segflow.progress import ProgressBar, attach

    watches = []  # the Prefect API watched during a flow run (none when the cache serves the rerun)

    def watch() -> None:
        watches.append(watch_api(lambda manifest, summary: api_lost_exit(manifest, summary, _print_summary)))

    try:
        with attach(ProgressBar()):
            result = run_label(list(inputs), out, before_flow=watch, **settings)
    except InputsFailed as exc:
        _print_summary(exc.summary)
        raise
    finally:
        for w in watches:
            if w is not None:
                w.stop()
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
        elif item.get("note"):
            click.echo(f"skipped {item['source']}: {item['note']}")
        elif len(ok) <= LISTED_INPUTS:
            state = "up to date" if item["up_to_date"] else f"{item['frames_segmented']} frames segmented"
            # an image's rows live in its shard's file, written once for all its images
            where = f"in shard {item['shard']}" if item.get("shard") else f"{item['files_written']} file(s) written"
            click.echo(f"ok {item['source']}: {item['frames']} frames, {item['instances']} instances, {state}, {where}")
    sharded = [item for item in ok if item.get("shard")]
    if sharded and len(ok) <= LISTED_INPUTS:
        click.echo(f"{len(sharded)} image(s) stored in {len({i['shard'] for i in sharded})} shard(s): "
                   f"{sum(i['files_written'] for i in sharded)} file(s) written")
    if len(ok) > LISTED_INPUTS:
        total = {k: sum(item[k] for item in ok) for k in ("frames", "instances", "frames_segmented", "files_written")}
        # in users' terms: inputs the model ran on vs inputs taken whole from the cache (an
        # image in a shard that got new images is reused, though its shard's file is written)
        segmented = sum(item["frames_segmented"] > 0 for item in ok)
        click.echo(
            f"ok {len(ok)} inputs: {total['frames']} frames, {total['instances']} instances; "
            f"{segmented} input(s) segmented ({total['frames_segmented']} frames), {len(ok) - segmented} reused "
            f"from cache; {total['files_written']} label file(s) written (each: {result['out']}/.segflow/manifest.json)"
        )
    click.echo(f"labels: {result['out']}  model: {result['model_id']}  params: {result['params_hash']}")


LISTED_INPUTS = 20  # labeled inputs listed one per line; more are summed up in one line


@cli.command()
@click.option("--inbox", default=DEFAULT_INBOX, show_default=True, help="Folder the label-inbox deployment watches.")
@click.option("--out", default=DEFAULT_OUT, show_default=True, help="Output folder of label-dataset and relabel.")
@click.option("--inbox-out", default=DEFAULT_INBOX_OUT, show_default=True,
              help="Output folder of label-inbox (its own: one label table, one settings set).")
@click.option("--cron", default=INBOX_CRON, show_default=True, help="Schedule of label-inbox.")
def serve(inbox: str, out: str, inbox_out: str, cron: str) -> None:
    """Serve the deployments (label-dataset, label-inbox, relabel) from this process.

    The no-infrastructure alternative to `prefect deploy --all` + a worker: runs
    triggered from the UI or API execute here until stopped.
    """
    from prefect import serve as prefect_serve
    from prefect.client.schemas.objects import ConcurrencyLimitConfig

    from segflow.flows.inbox import label_inbox_flow
    from segflow.flows.label import label_flow
    from segflow.flows.relabel import relabel_flow

    prefect_serve(
        label_flow.to_deployment("label-dataset", parameters={"out": out}, enforce_parameter_schema=True),
        label_inbox_flow.to_deployment("label-inbox", cron=cron, parameters={"inbox": inbox, "out": inbox_out},
                                       concurrency_limit=ConcurrencyLimitConfig(**INBOX_CONCURRENCY)),
        relabel_flow.to_deployment("relabel", parameters={"out": out}),
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point: every user error becomes one line on stderr and exit status 2."""
    if not os.environ.get("PREFECT_API_URL"):
        # The temporary server Prefect starts would report anonymous usage at start-up,
        # and print an ERROR line wherever there is no internet.
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        # Prefect gives its temporary server 20 s to start: on a loaded machine that fails
        # (bench/cli.py at load 15); a slow start beats a failed command.
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    args = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in args if not a.startswith("-")), None)
    if "--help" in args or "-h" in args:
        command = None  # help only: no server, no hint
    server = None
    global _ABORT_ON_SIGNALS
    _ABORT_ON_SIGNALS = command == "label"
    if command in FLOW_COMMANDS:
        from segflow.server import use_running_server

        server = use_running_server() or os.environ.get("PREFECT_API_URL")
        from segflow.faults import quiet_prefect_failures

        quiet_prefect_failures()  # a refusal mid-flow (an export's input gone): its one line, no traceback
        if _ABORT_ON_SIGNALS:
            from segflow.faults import abort_on_signals

            abort_on_signals()
    try:
        # (label, export, preview, review: their own once their inputs are checked and a flow run
        # is wanted, so a refusal, a rerun the cache serves or an export without a server imports
        # no Prefect)
        with flow_context() if command in FLOW_COMMANDS - FLOW_WHEN_NEEDED else contextlib.nullcontext():
            cli.main(args=args, prog_name="segflow", standalone_mode=False)
    except InputsFailed as exc:  # the good inputs were labeled; the run still failed
        click.echo(f"segflow: error: {exc}", err=True)
        return 1
    except SegflowError as exc:
        click.echo(f"segflow: error: {exc}", err=True)
        return getattr(exc, "exit_code", 2)  # 1: the output failed mid-run (OutputFailed)
    except click.exceptions.Abort:
        click.echo("segflow: aborted", err=True)
        return 130
    except click.ClickException as exc:
        click.echo(f"segflow: error: {exc.format_message()}", err=True)
        return exc.exit_code
    finally:
        if _ABORT_ON_SIGNALS:
            from segflow.faults import restore_signals

            restore_signals()
    if command in FLOW_COMMANDS and not server and _temporary_server_ran() and not _configured_api():
        click.echo("hint: `segflow server start` keeps one Prefect server for later commands "
                   "(no temporary server per command; runs stay in its UI)", err=True)
    return 0


def _temporary_server_ran() -> bool:
    """Whether this process started Prefect's temporary server (its module is imported only
    then): a command that ran no flow (a rerun the cache served, an export) started none."""
    return "prefect.server.api.server" in sys.modules


def _configured_api() -> str | None:
    """The Prefect API this process used (a profile or settings context may set one)."""
    if "prefect" not in sys.modules:
        return None
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


# Commands that run Prefect flows (so talk to a server, a temporary one without `segflow server`)
FLOW_COMMANDS = frozenset({"label", "demo", "export", "preview", "evaluate", "train", "import", "compare", "review"})
# ... of which these run one only where needed (label: work to do; the others: a server to record it)
FLOW_WHEN_NEEDED = frozenset({"label", "export", "preview", "review"})


if __name__ == "__main__":
    sys.exit(main())
