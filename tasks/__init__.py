"""The label flow's stages, imported as `segflow.tasks.*` (pyproject.toml's `package-dir`
maps this folder to `segflow.tasks`: `segflow.tasks.track` is the file tasks/track.py).

One module per stage, in flow order: decode, segment, filter, polygonize, track,
persist. Each declares its stage as data, `STAGE = StageSpec(...)` (what it reads, its
cache key from a small per-stage config, its batching and in-flight policy, whether it
runs in order), beside a thin `@task` taking `(config, list[Work])`. `segflow/pipeline.py`
runs them; `flows/label.py` lists them. No stage imports another; pure algorithms live
in `segflow/ops/` (the tracker in `segflow/ops/tracker/`) and `segflow/models/`.

To add a stage setting: the field in `segflow/settings.py` (the one settings model:
CLI options, flow parameters and the UI form come from it), then the stage's config
(`<stage>_config(job)` and its dataclass here) and, if it changes the output, its key.
"""
