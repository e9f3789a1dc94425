"""One definition of every setting: the CLI, the flows' parameters (so the UI form),
prefect.yaml and the README all come from segflow/settings.py."""

from __future__ import annotations

import re
from pathlib import Path

import click
import pytest
import yaml
from prefect.utilities.callables import parameter_schema
from prefect.utilities.schema_tools import validate

from segflow.cli import cli
from segflow.flows.inbox import label_inbox_flow
from segflow.flows.label import label_flow
from segflow.flows.relabel import relabel_flow
from segflow.settings import LabelSettings, flag_of, make_settings, settings_table, unset_text

REPO = Path(__file__).resolve().parents[1]
FLOWS = (label_flow, label_inbox_flow, relabel_flow)


def schema_of(flow) -> dict:
    return parameter_schema(flow).model_dump_for_openapi()


def fields_of(schema: dict):
    """Every field of a parameter schema, nested settings models included."""
    yield from schema["properties"].items()
    for definition in schema.get("definitions", {}).values():
        yield from definition["properties"].items()


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.name)
def test_every_form_field_has_a_title_and_a_description(flow):
    for name, field in fields_of(schema_of(flow)):
        assert field.get("title") and field.get("description"), name
        assert "anyOf" not in field, f"{name}: the form would show a type toggle"
        assert field.get("default", "") is not None, f"{name}: a null default the schema refuses"


def test_the_schema_refuses_bad_settings():
    schema = schema_of(label_flow)
    ok = {"inputs": ["clip.mp4"], "settings": {"confidence": 0.5, "device": "cuda:1"}, "advanced": {"precision": "mixed"}}
    validate(ok, schema, raise_on_error=True, preprocess=True)
    for bad in ({"settings": {"device": "gpu0"}}, {"settings": {"confidence": 1.5}}, {"advanced": {"precision": "fp16"}},
                {"inputs": []}, {"settings": {"no_such": 1}}):
        with pytest.raises(Exception):
            validate({**ok, **bad}, schema, raise_on_error=True, preprocess=True)


def test_cli_options_are_the_settings():
    params = {p.name: p for p in cli.commands["label"].params}
    demo = {p.name: p for p in cli.get_command(click.Context(cli), "demo").params}
    for name, field in LabelSettings.model_fields.items():
        for command in (params, demo):
            option = command[name]
            assert option.default == field.default, name
            assert option.help.startswith(field.json_schema_extra["summary"]), name
            assert flag_of(name).split("/")[0] in option.opts, name
        assert (field.default is None) == (unset_text(name) is not None), name


def test_no_default_is_written_twice():
    """prefect.yaml repeats no parameter, and no module but settings.py spells a
    setting's default next to its name (a flow signature, a click option, a dict)."""
    for deployment in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]:
        assert not deployment.get("parameters"), deployment["name"]
    sources = [p for d in ("segflow", "flows", "tasks", "storage") for p in (REPO / d).rglob("*.py")]
    # not checked: settings.py itself, the evaluate flow (its own few knobs) and the tracker's
    # algorithm config (TrackerConfig keeps library defaults of its own; tasks/track.py or
    # segflow/ops/tracker/), which a label run always fills from the settings (tracker_config)
    skip = {"settings.py", "evaluate.py", "track.py"}
    sources = [p for p in sources if p.name not in skip and "tracker" not in p.parts]
    for name, field in LabelSettings.model_fields.items():
        if field.default is None:
            continue
        value = re.escape(repr(field.default))
        spelled = re.compile(rf"(\b{name}\b[^=\n,]*=\s*{value}\b|\"{flag_of(name)}\"[^\n]*default={value}\b)")
        for path in sources:
            assert not spelled.search(path.read_text()), f"{path.relative_to(REPO)} repeats the default of {name}"


def test_readme_settings_table_is_the_settings():
    readme = (REPO / "README.md").read_text()
    assert settings_table() in readme


def test_refusals_name_the_flag_and_the_allowed_values():
    for values, words in (({"device": "gpu0"}, "--device='gpu0': not allowed (allowed: auto, cpu, cuda, cuda:N)"),
                          ({"confidence": 1.5}, "--confidence=1.5"),
                          ({"precision": "fp16"}, "(allowed: auto, fp32, mixed)")):
        with pytest.raises(Exception, match=re.escape(words)):
            make_settings(**values)
