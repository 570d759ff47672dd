"""Presets: the sizes a reproduction runs at, as one frozen dataclass per paper (nanoGPT's config files as
small override objects of one another).

A field that describes a model is a ``ModelConfig``, one that describes its training a ``TrainConfig``; every
other field is a plain typed knob (``int``, ``float``, ``bool``, ``str``, tuples of them, ``X | None``) with a
one-line comment. ``to_dict`` / ``from_dict`` round-trip through JSON (``results.json`` stores the preset that
ran, so ``mechmem reproduce --from results.json`` reruns it exactly), and ``with_settings`` applies
``--set field=value`` / ``--set model_field.sub_field=value`` from the command line.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from mechmem.core.typed import dataclass_from_dict, parse_text

#: the presets every reproduction declares (``smoke``: seconds, for tests; ``quick``: minutes on a CPU;
#: ``full``: the paper's sizes)
PRESET_NAMES = ("smoke", "quick", "full")


@dataclass(frozen=True)
class Preset:
    """Base of every paper's preset dataclass: a name, plus the paper's sizes as typed fields.

    Presets are small override objects: ``SMOKE = QUICK.override(name="smoke", steps=60)``; a
    dict value replaces fields of a nested dataclass: ``QUICK.override(train={"steps": 60})``.
    """

    name: str = "quick"

    def override(self: P, **changes: Any) -> P:
        fields = {f.name: f for f in dataclasses.fields(self)}
        updates = {}
        for key, value in changes.items():
            if key not in fields:
                raise ValueError(f"{type(self).__name__} has no field {key!r}; fields: {sorted(fields)}")
            current = getattr(self, key)
            if isinstance(value, dict) and dataclasses.is_dataclass(current):
                value = _replace(current, value, f"{key}.")
            updates[key] = value
        return dataclasses.replace(self, **updates)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[P], data: dict) -> P:
        """The preset ``to_dict`` saved (also through JSON, e.g. ``results.json``'s ``preset_config``)."""
        return dataclass_from_dict(cls, data)

    def with_settings(self: P, settings: Sequence[str]) -> tuple[P, dict[str, Any]]:
        """This preset with ``["field=value", "model.d_model=64", ...]`` applied (``--set``), and the parsed changes
        by dotted name. Values are parsed to the field's type; an unknown field, a nested field of a field that is
        not a config, or a value the config refuses raises a ``ValueError`` naming it."""
        hints = typing.get_type_hints(type(self))
        fields = [f.name for f in dataclasses.fields(self) if f.init and f.name != "name"]
        nested: dict[str, dict[str, Any]] = {}
        flat: dict[str, Any] = {}
        parsed: dict[str, Any] = {}
        for setting in settings:
            key, sep, text = setting.partition("=")
            head, dot, sub = key.strip().partition(".")
            if not sep or not head:
                raise ValueError(f"--set expects field=value, got {setting!r}")
            if head not in fields:
                raise ValueError(f"--set {key}: {type(self).__name__} has no field {head!r}; fields: {fields}")
            if dot:
                value = _nested_value(getattr(self, head), sub, text, key)
                nested.setdefault(head, {})[sub] = value
            else:
                value = parse_text(text, hints[head], key)
                flat[head] = value
            parsed[key.strip()] = value
        changes: dict[str, Any] = dict(flat)
        for head, subs in nested.items():
            base = flat.get(head, getattr(self, head))
            changes[head] = _replace(base, subs, f"{head}.")
        return dataclasses.replace(self, **changes), parsed


#: a paper's preset class (``Context[P]``, ``Reproduction[P]``)
P = TypeVar("P", bound=Preset)


def _nested_value(obj: Any, sub: str, text: str, key: str) -> Any:
    if not dataclasses.is_dataclass(obj):
        raise ValueError(f"--set {key}: {key.partition('.')[0]} is not a config with fields of its own")
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj) if f.init]
    if sub not in names:
        raise ValueError(f"--set {key}: {type(obj).__name__} has no field {sub!r}; fields: {names}")
    return parse_text(text, hints[sub], key)


def _replace(obj: Any, changes: dict, where: str) -> Any:
    names = {f.name for f in dataclasses.fields(obj) if f.init}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise ValueError(f"{where}{unknown[0]} is not a field of {type(obj).__name__}; fields: {sorted(names)}")
    return dataclasses.replace(obj, **changes)
