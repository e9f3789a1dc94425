"""`import segflow` from a checkout's root: flows/, tasks/ and storage/ are installed as
segflow.flows, segflow.tasks, segflow.storage (pyproject's package-dir), but Python run in
the checkout's root imports its `segflow/` folder first, where an installed package's
mapping is not asked (a regular install: "No module named 'segflow.storage'")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# As a regular (not editable) install sees it: no editable finder, segflow found in the cwd.
AS_INSTALLED = """
import sys
sys.meta_path = [f for f in sys.meta_path if "Editable" not in getattr(f, "__name__", "")]
import segflow, segflow.storage.layout, segflow.flows.label, segflow.tasks.track
print(segflow.__file__, segflow.storage.layout.__file__, segflow.flows.label.__file__, segflow.tasks.track.__file__)
"""


def test_the_checkout_root_imports_its_own_flows_tasks_and_storage():
    done = subprocess.run([sys.executable, "-c", AS_INSTALLED], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr.strip().splitlines()[-1:]
    files = [Path(f) for f in done.stdout.split()]
    assert files == [REPO / "segflow/__init__.py", REPO / "storage/layout.py", REPO / "flows/label.py",
                     REPO / "tasks/track.py"], files


def test_an_installed_copy_searches_only_itself(tmp_path):
    """A package with its own flows/ (as pip installs it) does not add the folder above it."""
    package = tmp_path / "site" / "segflow"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text((REPO / "segflow/__init__.py").read_text())
    for part in ("flows", "tasks", "storage"):
        (package / part).mkdir()
        (package / part / "__init__.py").write_text("")
        (tmp_path / "site" / part).mkdir()  # a checkout-like neighbour that must not be searched
        (tmp_path / "site" / part / "__init__.py").write_text("")
    (tmp_path / "site" / "pyproject.toml").write_text("")
    code = "import segflow; print(segflow.__path__)"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path / "site", capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == repr([str(package)]), (done.stdout, done.stderr)
