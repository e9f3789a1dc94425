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


@pytest.mark.parametrize("flow, group", [(label_flow, "settings"), (label_inbox_flow, "settings"),
                                         (relabel_flow, "changes")], ids=lambda v: getattr(v, "name", v))
def test_the_forms_refusal_of_a_device_is_readable(flow, group):
    """What the Prefect UI shows under the field: the server's /ui/schemas/validate answer
    (Prefect's validate + build_error_obj), which was `'gpu' does not match '^(auto|cpu|cuda(:\\d+)?)$'`."""
    from prefect.utilities.schema_tools.validation import build_error_obj, preprocess_schema

    schema = preprocess_schema(schema_of(flow))
    base = {"inputs": ["clip.mp4"]} if flow is label_flow else {}
    for device in ("auto", "cpu", "cuda", "cuda:0", "cuda:12"):
        assert validate({**base, group: {"device": device}}, schema, preprocess=False) == [], device
    for device in ("gpu", "cuda:x", "CPU"):
        errors = build_error_obj(validate({**base, group: {"device": device}}, schema, preprocess=False))["errors"]
        assert errors == [{"property": group, "errors": [
            {"property": "device", "errors": [f"{device!r} is not one of ['auto', 'cpu', 'cuda']"]}]}], errors
        with pytest.raises(Exception) as refused:  # `prefect deployment run -p` (the API's own check)
            validate({**base, group: {"device": device}}, schema, raise_on_error=True, preprocess=False)
        assert str(refused.value).endswith(f"{device!r} is not one of ['auto', 'cpu', 'cuda']"), refused.value
    assert make_settings(device="cuda:12").device == "cuda:12"  # the CLI and the Python API: the flag's own check
    with pytest.raises(Exception, match=re.escape("--device='cuda:x': not allowed (allowed: auto, cpu, cuda, cuda:N)")):
        make_settings(device="cuda:x")


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


def spellings(value) -> str:
    """A regex of the ways Python source spells `value`: both quotes for a string, 16.0
    also as 16 (and the reverse)."""
    if isinstance(value, str):
        return "|".join(re.escape(q + value + q) for q in "'\"")
    if isinstance(value, float) and value.is_integer():
        return rf"{int(value)}(?:\.0+)?\b"
    return re.escape(repr(value)) + (r"\b" if repr(value)[-1].isalnum() else "")


# Names a setting has in the code below the settings (the tracker's own config)
ALIASES = {"track_low_score": ("low_score",), "track_class_penalty": ("class_penalty",)}


def test_no_default_is_written_twice():
    """prefect.yaml repeats no parameter and schedules label-inbox as `segflow serve` does;
    no module but settings.py spells a setting's default next to its name (a signature, a
    dataclass field, a click option, a dict's `.get`), the tracker's and evaluate's included."""
    from segflow.settings import CLASS_PENALTY, INBOX_CRON, default_of

    deployments = {d["name"]: d for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]}
    for deployment in deployments.values():
        assert not deployment.get("parameters"), deployment["name"]
    assert [s["cron"] for s in deployments["label-inbox"]["schedules"]] == [INBOX_CRON]
    sources = [p for d in ("segflow", "flows", "tasks", "storage") for p in (REPO / d).rglob("*.py")
               if p.name != "settings.py"]
    defaults = {name: field.default for name, field in LabelSettings.model_fields.items() if field.default is not None}
    defaults["track_class_penalty"] = CLASS_PENALTY  # its default when unset (per-class NMS)
    texts = {path: path.read_text() for path in sources}
    for name, value in defaults.items():
        assert name == "track_class_penalty" or default_of(name) == value
        names = "|".join((name, *ALIASES.get(name, ())))
        spelled = re.compile(rf"\b(?:{names})\b[^=\n,(]*=\s*(?:{spellings(value)})"  # name: type = value
                             rf"|\.get\(\s*[\"'](?:{names})[\"']\s*,\s*(?:{spellings(value)})"  # .get("name", value)
                             rf"|[\"']{flag_of(name).split('/')[0]}[\"'][^\n]*default=(?:{spellings(value)})")  # click
        for path, text in texts.items():
            found = spelled.search(text)
            assert not found, f"{path.relative_to(REPO)} repeats the default of {name}: {found.group(0)!r}"


def test_readme_settings_table_is_the_settings():
    readme = (REPO / "README.md").read_text()
    assert settings_table() in readme
    # a tri-state setting shows the form's choices and its unset value, as the form does
    form = LabelSettings.model_json_schema()["properties"]["class_agnostic_nms"]
    row = next(r for r in settings_table().splitlines() if "`advanced.class_agnostic_nms`" in r)
    assert f"| {'/'.join(form['enum'])} | `{form['default']}`: " in row, row


def test_refusals_name_the_flag_and_the_allowed_values():
    for values, words in (({"device": "gpu0"}, "--device='gpu0': not allowed (allowed: auto, cpu, cuda, cuda:N)"),
                          ({"confidence": 1.5}, "--confidence=1.5"),
                          ({"precision": "fp16"}, "(allowed: auto, fp32, mixed)")):
        with pytest.raises(Exception, match=re.escape(words)):
            make_settings(**values)


def test_relabel_form_can_go_back_to_the_whole_video():
    from segflow.settings import WHOLE_VIDEO, RelabelChanges, relabel_settings

    schema = schema_of(relabel_flow)
    end = schema["definitions"]["RelabelChanges"]["properties"]["end_frame"]
    assert f"{WHOLE_VIDEO}: the video's last frame" in end["description"]
    validate({"changes": {"end_frame": WHOLE_VIDEO}}, schema, raise_on_error=True, preprocess=True)
    with pytest.raises(Exception):
        validate({"changes": {"end_frame": WHOLE_VIDEO - 1}}, schema, raise_on_error=True, preprocess=True)
    last = {"start_frame": 2, "end_frame": 5, "confidence": 0.5}
    assert relabel_settings(last, RelabelChanges(end_frame=WHOLE_VIDEO)).end_frame is None
    assert relabel_settings(last, RelabelChanges()).end_frame == 5  # empty: as in the earlier run
    assert relabel_settings(last, {"end_frame": 7, "confidence": None}).model_dump(include={"end_frame", "confidence"}) \
        == {"end_frame": 7, "confidence": 0.5}
