"""The import flow and `segflow import FILE... --format coco|encord|cvat --out DIR`.

Reviewed labels (a COCO file, Encord label rows, CVAT XML) become a segflow label table
in DIR, which `segflow train --data`, `export`, `review` and `compare` take like the
output of a label run (see `segflow.storage.imports`).
"""

from __future__ import annotations

import click
from prefect import flow, get_run_logger

from segflow.storage.imports import FORMATS, check_import, import_labels, read_files


@flow(name="import", log_prints=True)
def import_flow(files: list[str], format: str, out: str) -> dict:  # noqa: A002 - the CLI's name
    """Import `files` (in `format`) into a label table in `out`; returns a summary."""
    summary = import_labels(files, format, out)
    get_run_logger().info("imported %d input(s) from %s into %s", len(summary["inputs"]), ", ".join(files), out)
    return summary


@click.command("import")
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option("--format", "fmt", required=True, metavar="|".join(FORMATS), help="Format of the files.")
@click.option("--out", required=True, help="New output folder for the label table.")
def import_command(files: tuple[str, ...], fmt: str, out: str) -> None:
    """Import reviewed labels (COCO, Encord label rows, CVAT XML) into a segflow label table."""
    paths, name, _ = check_import(list(files), fmt, out)  # one clear line and nothing written on bad input
    read_files(paths, name)  # unreadable or malformed files too, before the flow starts
    summary = import_flow(files=list(files), format=fmt, out=out)
    for item in summary["inputs"]:
        click.echo(f"imported {item['source']}: {item['frames']} frames, {item['instances']} instances, "
                   f"{item['objects']} objects")
    click.echo(import_summary_line(summary))


def import_summary_line(summary: dict) -> str:
    """`imported 2 input(s): 24 frames, 31 instances, 6 objects -> imp  model: import:coco:coco.json`,
    the counts `label`'s summary line gives (instances: rows of the label table)."""
    inputs = summary.get("inputs") or []
    return (f"imported {len(inputs)} input(s): {sum(i['frames'] for i in inputs)} frames, "
            f"{sum(i['instances'] for i in inputs)} instances, {sum(i['objects'] for i in inputs)} objects "
            f"-> {summary['out']}  model: {summary['model_id']}")


globals()["import"] = import_command  # `segflow import` (LAZY_COMMANDS looks the command up by its name)
