"""`segflow export` is a Prefect flow run only where a Prefect server records it; with none
configured it writes the same file in-process: no temporary server, no import of Prefect."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from prefect.settings import PREFECT_API_URL

# `segflow ARGS` in a fresh process, then its exit status and whether it imported Prefect
COMMAND = ("import sys\nfrom segflow.cli import main\nrc = main(sys.argv[1:])\n"
           "print(rc, 'prefect' in sys.modules, 'prefect.server.api.server' in sys.modules)")
API = ("import sys\nfrom segflow.server import prefect_api\n"
       "print(prefect_api(), 'prefect' in sys.modules)")


def run(code: str, args: list, cwd, **env) -> subprocess.CompletedProcess:
    """`python -c CODE ARGS` with no Prefect setting from this process (its own PREFECT_HOME)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    clean.update(PREFECT_HOME=str(cwd / "prefect-home"), PREFECT_SERVER_ANALYTICS_ENABLED="false", **env)
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=clean,
                          cwd=cwd, timeout=600)


def test_without_a_server_the_export_is_written_without_prefect(labeled, tmp_path):
    plain = run(COMMAND, ["export", labeled, "--format", "coco", "--to", tmp_path / "plain.json"], tmp_path)
    assert plain.stdout.splitlines()[-2:] == [str(tmp_path / "plain.json"), "0 False False"], plain.stderr
    assert "hint:" not in plain.stderr and "temporary server" not in plain.stderr, plain.stderr
    flow = run(COMMAND, ["export", labeled, "--format", "coco", "--to", tmp_path / "flow.json"], tmp_path,
               PREFECT_API_URL=PREFECT_API_URL.value())  # the tests' server records the run
    assert flow.stdout.splitlines()[-1] == "0 True False", flow.stderr
    assert "Finished in state Completed" in flow.stderr, flow.stderr
    documents = [json.loads((tmp_path / name).read_text()) for name in ("plain.json", "flow.json")]
    assert documents[0] == documents[1] and documents[0]["annotations"]
    frames = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.jpg"))
    assert frames and len(frames) == len(documents[0]["images"])  # both wrote the same frame files


def test_a_refused_export_without_a_server_is_one_line(labeled, tmp_path):
    done = run(COMMAND, ["export", labeled, "--format", "pdf", "--to", tmp_path / "x.pdf"], tmp_path)
    assert done.stdout.splitlines()[-1] == "2 False False" and len(done.stderr.splitlines()) == 1, done.stderr
    assert not (tmp_path / "x.pdf").exists()


def test_prefect_api_asks_prefect_only_where_a_settings_file_may_set_it(tmp_path):
    assert run(API, [], tmp_path).stdout.split() == ["None", "False"]
    assert run(API, [], tmp_path, PREFECT_API_URL="http://127.0.0.1:9/api").stdout.split() == \
        ["http://127.0.0.1:9/api", "False"]
    home = tmp_path / "prefect-home"
    home.mkdir()
    (home / "profiles.toml").write_text('active = "remote"\n\n[profiles.remote]\n'
                                        'PREFECT_API_URL = "http://127.0.0.1:9/api"\n')
    assert run(API, [], tmp_path).stdout.split() == ["http://127.0.0.1:9/api", "True"]  # a profile's, as Prefect reads it
    (home / "profiles.toml").unlink()
    (tmp_path / "prefect.toml").write_text('[api]\nurl = "http://127.0.0.1:8/api"\n')
    assert run(API, [], tmp_path).stdout.split() == ["http://127.0.0.1:8/api", "True"]
    (tmp_path / "prefect.toml").write_text('[logging]\nlevel = "INFO"\n')  # read, and it sets none
    assert run(API, [], tmp_path).stdout.split() == ["None", "True"]


def test_preview_and_review_without_a_server_run_no_flow(labeled, tmp_path):
    review = run(COMMAND, ["review", labeled, "--top", "3", "--json"], tmp_path)
    assert review.stdout.splitlines()[-1] == "0 False False", review.stderr
    flow = run(COMMAND, ["review", labeled, "--top", "3", "--json"], tmp_path, PREFECT_API_URL=PREFECT_API_URL.value())
    assert flow.stdout.splitlines()[-1] == "0 True False", flow.stderr
    assert json.loads(review.stdout.splitlines()[0]) == json.loads(flow.stdout.splitlines()[0])  # the same listing
    preview = run(COMMAND, ["preview", labeled, "--to", tmp_path / "preview"], tmp_path)
    assert preview.stdout.splitlines()[-1] == "0 False False", preview.stderr
    written = preview.stdout.splitlines()[:-1]
    assert written and all((tmp_path / "preview" / p).exists() for p in written)
