"""`segflow cache OUT`: the size of an output folder's label table and stage caches, and
`--prune` to remove the cache files no label file needs (`segflow.storage.housekeeping`)."""

from __future__ import annotations

import json

import click

from segflow.errors import SegflowError
from segflow.storage.fs import as_path
from segflow.storage.housekeeping import cache_report, prune_all
from segflow.storage.layout import Layout


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


@click.command("cache")
@click.argument("out_dir", metavar="OUT")
@click.option("--prune", is_flag=True,
              help="Remove the cache files no label file needs (run it while no label run writes to OUT).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def cache(out_dir: str, prune: bool, as_json: bool) -> None:
    """Show the size of an output folder's label table and caches; --prune removes unreachable cache files.

    OUT is a label run's --out folder. Unreachable cache files are those no label file
    names (made with earlier settings, or for shards cut again)."""
    layout = Layout(as_path(out_dir))
    if not layout.root.is_dir():
        raise SegflowError(f"OUT {out_dir}: no such folder")
    removed = prune_all(layout) if prune else None
    r = cache_report(layout)
    if removed is not None:
        r["pruned_files"], r["pruned_bytes"] = removed
    if as_json:
        click.echo(json.dumps(r, sort_keys=True))
        return
    stages = ", ".join(f"{k} {v['files']} files {_size(v['bytes'])}" for k, v in r["stages"].items()) or "empty"
    click.echo(f"label table  {r['label_files']} files  {_size(r['label_bytes'])}")
    click.echo(f"cache        {r['cache_files']} files  {_size(r['cache_bytes'])}  ({stages})")
    click.echo(f"other        {r['other_files']} files  {_size(r['other_bytes'])}  (manifest)")
    if removed is not None:
        click.echo(f"pruned       {removed[0]} files  {_size(removed[1])}")
    else:
        click.echo(f"unreachable  {r['unreachable_files']} files  {_size(r['unreachable_bytes'])}"
                   + (f"  (segflow cache {out_dir} --prune removes them)" if r["unreachable_files"] else ""))
