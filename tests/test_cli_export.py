"""`segflow export` (and preview, review) write in-process without importing Prefect; where a
Prefect server records runs, the work is recorded there as the flow run it replaces
(`segflow.runrecord`, REST); with none configured, no temporary server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import httpx
import pytest

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
    assert flow.stdout.splitlines()[-1] == "0 False False", flow.stderr  # recorded without importing Prefect
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
    assert flow.stdout.splitlines()[-1] == "0 False False", flow.stderr
    assert json.loads(review.stdout.splitlines()[0]) == json.loads(flow.stdout.splitlines()[0])  # the same listing
    preview = run(COMMAND, ["preview", labeled, "--to", tmp_path / "preview"], tmp_path)
    assert preview.stdout.splitlines()[-1] == "0 False False", preview.stderr
    written = preview.stdout.splitlines()[:-1]
    assert written and all((tmp_path / "preview" / p).exists() for p in written)


def _recorded(run_id: str) -> dict:
    """A flow run as the server reads it back: its flow, state, parameters, log lines, artifacts."""
    api = PREFECT_API_URL.value()
    flow_run = httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()
    logs = httpx.post(f"{api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}, "sort": "TIMESTAMP_ASC"},
                      timeout=10).json()
    artifacts = httpx.post(f"{api}/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}},
                           timeout=10).json()
    return {"flow": httpx.get(f"{api}/flows/{flow_run['flow_id']}", timeout=10).json()["name"],
            "name": flow_run["name"], "version": flow_run["flow_version"], "parameters": flow_run["parameters"],
            "state": (flow_run["state_type"], flow_run["state_name"], flow_run["state"]["message"]),
            "retries": flow_run["empirical_policy"]["retries"], "timed": flow_run["total_run_time"] > 0,
            "logs": [(log["name"], log["level"], log["message"].replace(flow_run["name"], "RUN")) for log in logs],
            "artifacts": sorted((a["key"], a["type"], a["description"], json.loads(a["data"])) for a in artifacts)}


@pytest.mark.parametrize("command", ["export", "review"])
def test_with_a_server_the_run_is_recorded_as_its_flow_run(command, labeled, tmp_path):
    """The run `segflow` records without Prefect reads back as the flow run it replaces
    (the flow called in-process with Prefect) does: flow, version, parameters, state, log lines, artifacts."""
    from segflow.flows.export import export_flow
    from segflow.flows.review import review_flow

    to = tmp_path / "coco.json"
    if command == "export":
        args, flow = ["export", labeled, "--format", "coco", "--to", to, "--no-frames"], export_flow
        call = dict(out=str(labeled), format="coco", to=str(to), frames=False)
    else:
        args, flow = ["review", labeled, "--top", "3"], review_flow
        call = dict(out=str(labeled), top=3)
    done = run(COMMAND, args, tmp_path, PREFECT_API_URL=PREFECT_API_URL.value(), PREFECT_UI_URL="http://ui")
    assert done.stdout.splitlines()[-1] == "0 False False", done.stderr
    run_id = re.search(r"View at http://ui/runs/flow-run/([0-9a-f-]+)", done.stderr).group(1)
    state = flow(**call, return_state=True)
    ours, theirs = _recorded(run_id), _recorded(str(state.state_details.flow_run_id))
    for _ in range(50):  # Prefect sends a flow run's log lines in the background, its last one a moment later
        if theirs["logs"][-1:] == [("prefect.flow_runs", 20, "Finished in state Completed()")]:
            break
        time.sleep(0.2)
        theirs = _recorded(str(state.state_details.flow_run_id))
    assert ours["state"] == ("COMPLETED", "Completed", None) and ours["flow"] == command and ours["timed"]
    assert ours["logs"][0] == ("prefect.flow_runs", 20, f"Beginning flow run 'RUN' for flow '{command}'")
    assert ours["artifacts"] or command == "export"
    del ours["name"], theirs["name"]
    assert ours == theirs


def test_a_failed_run_is_recorded_failed_and_an_unreachable_server_costs_only_the_record(tmp_path, capsys):
    from segflow.errors import SegflowError
    from segflow.runrecord import recorded

    with pytest.raises(SegflowError), recorded(PREFECT_API_URL.value(), "export", {"out": "x"}) as server_run:
        raise SegflowError("disk full")
    got = _recorded(server_run.id)
    assert got["state"] == ("FAILED", "Failed", "Flow run encountered an exception: SegflowError: disk full")
    assert got["logs"][-1][1:] == (40, "Finished in state Failed('Flow run encountered an exception: SegflowError: "
                                       "disk full')") and got["parameters"] == {"out": "x"}
    capsys.readouterr()
    with recorded("http://127.0.0.1:9/api", "export", {}) as lost:
        (tmp_path / "done").write_text("work")
    assert (tmp_path / "done").exists() and lost.id is None
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("segflow: warning: the Prefect server did not record this export run"), err
