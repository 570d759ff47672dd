"""JSON values back into typed dataclasses: how a config or preset saved with ``to_dict`` (and stored in
``config.json`` / ``results.json``) is rebuilt, and how ``--set key=value`` text becomes a field's value.

Only the types configs use are supported: ``bool``, ``int``, ``float``, ``str``, ``None``, ``tuple[X, ...]``,
``tuple[X, Y]``, ``list[X]``, ``dict[str, X]``, unions with ``None`` and dataclasses made of those. Anything else
raises a ``TypeError`` naming the field, so a preset cannot grow a field that would not survive a round trip.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any


def from_jsonable(value: Any, annotation: Any, where: str) -> Any:
    """``value`` (as ``json.loads`` gives it) converted to ``annotation``; ``where`` names the field in errors."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"{where}: unions other than X | None are not supported ({annotation})")
        return from_jsonable(value, inner[0], where)
    if origin is tuple:
        return _tuple(value, args, where)
    if origin is list:
        return [from_jsonable(v, args[0] if args else Any, f"{where}[{i}]") for i, v in enumerate(_seq(value, where))]
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        item = args[1] if args else Any
        return {str(k): from_jsonable(v, item, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(annotation):
        return dataclass_from_dict(annotation, value, where)
    return _scalar(value, annotation, where)


def dataclass_from_dict(cls: type, data: Any, where: str = "") -> Any:
    """An instance of dataclass ``cls`` from ``data`` (a dict of its init fields, e.g. ``asdict`` through JSON);
    an unknown or missing field raises a ``ValueError`` naming it. The instance validates itself as usual."""
    name = where or cls.__name__
    if not isinstance(data, dict):
        raise ValueError(f"{name}: expected a mapping of {cls.__name__}'s fields, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"{name}: {unknown[0]!r} is not a field of {cls.__name__}; fields: {sorted(fields)}")
    prefix = f"{where}." if where else ""
    kwargs = {key: from_jsonable(value, hints[key], prefix + key) for key, value in data.items()}
    return cls(**kwargs)


def parse_text(text: str, annotation: Any, where: str) -> Any:
    """The value ``--set where=text`` gives a field of type ``annotation``.

    JSON is read as JSON (``[[2, 0.25], [0.5, 2]]``, ``{"steps": 60}``, ``null``); otherwise a comma list for
    tuples and lists (``8,11,16``), ``key:value`` pairs for dicts, ``true``/``false`` for booleans, ``none`` for
    an optional field, and the text itself for strings."""
    stripped = text.strip()
    if stripped[:1] in "[{" and stripped:
        try:
            return from_jsonable(json.loads(stripped), annotation, where)
        except json.JSONDecodeError as err:
            raise ValueError(f"--set {where}: {text!r} is not valid JSON ({err.msg})") from None
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if stripped.lower() in ("none", "null"):
            return None
        inner = [a for a in args if a is not type(None)]
        return parse_text(text, inner[0], where)
    if origin in (tuple, list):
        items = [t.strip() for t in stripped.split(",") if t.strip()]
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis) and len(items) != len(args):
            raise ValueError(f"--set {where}: expected {len(args)} comma-separated values, got {text!r}")
        item_types = [args[0]] * len(items) if len(args) == 2 and args[1] is Ellipsis or not args else list(args)
        values = [parse_text(t, a, where) for t, a in zip(items, item_types)]
        return tuple(values) if origin is tuple else values
    if origin is dict:
        out = {}
        for item in filter(None, stripped.split(",")):
            key, _, val = item.partition(":")
            out[key.strip()] = parse_text(val.strip(), args[1] if args else str, where)
        return out
    if annotation is bool:
        if stripped.lower() in ("true", "1", "yes"):
            return True
        if stripped.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"--set {where}: expected true or false, got {text!r}")
    if annotation in (int, float):
        try:
            return annotation(stripped)
        except ValueError:
            raise ValueError(f"--set {where}: expected {annotation.__name__}, got {text!r}") from None
    return text


def _seq(value: Any, where: str) -> list:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{where}: expected a list, got {value!r}")
    return list(value)


def _tuple(value: Any, args: tuple, where: str) -> tuple:
    items = _seq(value, where)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(from_jsonable(v, args[0], f"{where}[{i}]") for i, v in enumerate(items))
    if args and len(items) != len(args):
        raise ValueError(f"{where}: expected {len(args)} values, got {value!r}")
    types_ = args or (Any,) * len(items)
    return tuple(from_jsonable(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(items, types_)))


def _scalar(value: Any, annotation: Any, where: str) -> Any:
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (bool, int, float, str):
        if type(value) is not annotation:
            raise ValueError(f"{where}: expected {annotation.__name__}, got {value!r}")
        return value
    if annotation is type(None):
        if value is not None:
            raise ValueError(f"{where}: expected null, got {value!r}")
        return None
    raise TypeError(f"{where}: fields of type {annotation!r} cannot be stored as JSON and read back")
