"""Every byte on disk, imported as `segflow.storage.*` (pyproject.toml's `package-dir`
maps this folder to `segflow.storage`: `segflow.storage.table` is storage/table.py).

- `layout.py`: where each file of an output folder lives; `keys.py`: content ids and
  cache keys; `atomic.py`: atomic writes; `fs.py`: local paths and object stores.
- `table.py`: the label table's schema and the cached stage outputs (Parquet).
- `manifest.py`: the last run of each input.
- `exports/`: one module per export format; to add one, write `exports/<format>.py`
  (a pure function from the label table to the document) and register it in
  `exports/__init__.py` (`FORMATS`, `_BUILDERS`).

Storage imports no stage (tasks/); the stages read and write through it.
"""
