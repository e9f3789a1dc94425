"""Prefect flows, imported as `segflow.flows.*` (pyproject.toml's `package-dir` maps the
top-level folders flows/, tasks/ and storage/ to `segflow.flows`, `segflow.tasks` and
`segflow.storage`: `segflow.flows.label` is the file flows/label.py).

- `label.py`: the six stages in order (decode, segment, filter, polygonize, track,
  persist) and the run summary; the scheduler that runs them is `segflow/pipeline.py`.
- `inbox.py`, `relabel.py`: deployments over `label_flow`.
- `train.py`, `evaluate.py`, `export.py`, `preview.py`: the other commands' flows.

A flow reads like the script it replaces; work happens in the stages (tasks/) and below.
"""
