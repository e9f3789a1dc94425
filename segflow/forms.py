"""Pydantic building blocks for settings that users see as CLI flags and Prefect UI forms.

`setting` makes a field that carries its title, description, bounds and group (and what
applies when it is left unset); `tri_state` an on/off value that can be left unset; a
`FormModel` refuses unknown names, leaves unset values out when dumped, and its JSON
schema shows an optional value as an empty box rather than a type toggle. Which settings
exist, and their defaults, is `segflow.settings`.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_serializer


def setting(default: Any, title: str, description: str, *, advanced: bool = False, unset: str | None = None,
            flag: str | None = None, empty: str = "Empty", **bounds: Any) -> Any:
    """One setting's field. `unset`: what applies when a `None` default is left `empty`
    (the form's word for it); `flag`: the CLI flag when it is not `--<name>`
    (`--x/--no-x` for booleans). The schema's description says both; `summary` (in the
    field's extra) is the description alone, for the CLI help and the README."""
    extra: dict[str, Any] = {"group": "advanced" if advanced else "panel", "summary": description}
    if unset:
        extra["unset"] = unset
        description = f"{description} {empty}: {unset}."
    if flag:
        extra["flag"] = flag
    return Field(default, title=title, description=description, json_schema_extra=extra, **bounds)


def tri_state(unset: str) -> Any:
    """An on/off setting that can be left unset: bool or None in Python, a choice of
    `unset`/on/off in the form (a toggle cannot be left unset: the Prefect UI sends an
    untouched one as false)."""
    def parse(value: Any) -> Any:
        return {unset: None, "on": True, "off": False}.get(value, value) if isinstance(value, str) else value

    return Annotated[Optional[bool], BeforeValidator(parse),
                     WithJsonSchema({"type": "string", "enum": [unset, "on", "off"], "default": unset})]


def no_null_toggle(schema: dict[str, Any], model: Any = None) -> None:
    """A model's JSON schema without the `null` branch of its optional settings: the
    Prefect UI then shows an empty box (left empty = unset), not a type toggle."""
    for prop in schema.get("properties", {}).values():
        branches = prop.get("anyOf")
        if branches and {"type": "null"} in branches and len(branches) == 2:
            prop.update(next(b for b in branches if b != {"type": "null"}))
            del prop["anyOf"]
            if prop.get("default", 0) is None:
                del prop["default"]
        if prop.get("default", 0) is None and prop.get("enum"):  # a choice: its first is "unset"
            prop["default"] = prop["enum"][0]


class FormModel(BaseModel):
    """A settings model: unknown names refused, unset (None) values left out when dumped,
    so the form's defaults and the manifest hold no nulls the schema would refuse."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), json_schema_extra=no_null_toggle)

    @model_serializer(mode="wrap")
    def _without_unset(self, handler: Any) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}
