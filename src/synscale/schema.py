"""Typed configs from plain data: `from_dict` builds a frozen dataclass from a table and validates it
(unknown keys, wrong types and failed checks are `ConfigError`s that name the source and the key);
`to_dict` gives it back. The study config (synscale.config) and the training recipe (synscale.train.config)
are built on it."""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable
from typing import Any, Literal

from synscale.errors import ConfigError


__all__ = ["ConfigError", "check_range", "from_dict", "identity", "in_id_if_changed", "nonnegative", "not_in_id",
           "number", "positive", "to_dict"]


def check_range(name: str, value: float, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, high_open: bool = False) -> None:
    """The one range rule of config keys and command-line flags: `value` is a finite number in [low, high] (an
    open end excludes its bound); raises ValueError naming `name` and the range."""
    must = f"{name} must" if name else "must"
    if not math.isfinite(value):
        raise ValueError(f"{must} be a finite number, got {value}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{must} be {'>' if low_open else '>='} {low:g}, got {value:g}")
    if high is not None and (value >= high if high_open else value > high):
        raise ValueError(f"{must} be {'<' if high_open else '<='} {high:g}, got {value:g}")


def positive(obj: Any, *names: str) -> None:
    for n in names:
        check_range(n, getattr(obj, n), 0, low_open=True)


def nonnegative(obj: Any, *names: str) -> None:
    for n in names:
        check_range(n, getattr(obj, n), 0)


def number(kind: type, low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False) -> Callable[[str], Any]:
    """An argparse `type` for a flag: the text as `kind` (int or float) under check_range's rule (the message
    argparse shows names the flag)."""
    import argparse

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        try:
            check_range("", value, low, high, low_open=low_open, high_open=high_open)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its own messages
    return parse


# ---------------------------------------------------------------------------------------------------
# Validation: raw dict -> frozen dataclass, with errors that name the source, the key and the choices.


def from_dict(cls: type, data: dict[str, Any], source: str, prefix: str = "") -> Any:
    """Build dataclass `cls` from `data`; raise ConfigError naming `source` and the dotted key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: [{prefix or 'study'}] must be a table, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1) or [
                f for f in fields if key.startswith(f + "_") or f.startswith(key)
            ]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"{source}: unknown key {where!r}{hint}; allowed keys in "
                f"[{prefix.rstrip('.') or 'study'}]: {', '.join(fields)}"
            )
        kwargs[key] = _coerce(hints[key], value, source, where)
    missing = [
        n for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{source}: missing required key(s) {', '.join(prefix + m for m in missing)}")
    obj = cls(**kwargs)
    try:
        obj.check()
    except ValueError as e:
        raise ConfigError(f"{source}: [{prefix.rstrip('.') or 'study'}] {e}") from None
    return obj


def _coerce(tp: Any, value: Any, source: str, where: str) -> Any:
    origin = typing.get_origin(tp)
    bad = ConfigError(f"{source}: {where!r} must be {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, source, where + ".")
    if tp is Any:
        return value
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(
                f"{source}: {where!r} must be one of {', '.join(map(repr, typing.get_args(tp)))}, got {value!r}"
            )
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(arg, value, source, where)
            except ConfigError:
                pass
        raise bad
    if origin is list:
        if not isinstance(value, list):
            raise bad
        (arg,) = typing.get_args(tp)
        return [_coerce(arg, v, source, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad
        if not math.isfinite(value):  # TOML reads nan and inf: no key of a study means either
            raise ConfigError(f"{source}: {where!r} must be a finite number, got {value!r}")
        return float(value)
    if tp is type(None):
        if value is not None:
            raise bad
        return None
    if tp in (int, str, bool):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise bad
        return value
    raise TypeError(f"unsupported config type {tp}")  # a bug in a config class, not in the file


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is Literal:
        return " or ".join(map(repr, typing.get_args(tp)))
    if typing.get_origin(tp) is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if typing.get_origin(tp) is dict:
        return "a table"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false",
            type(None): "left out"}.get(tp, str(tp))


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


# ---------------------------------------------------------------------------------------------------
# Identity: what of a config enters the ids of the stages it configures, declared once on each field. A field is in
# the id unless declared otherwise: `not_in_id` (where and how fast a stage runs, or what another key already says:
# the same bytes either way), `in_id_if_changed` (a key added after ids were first made: in the id only where it
# differs from its default, so the stages of earlier workdirs keep their ids).

ID = "id"  # the field metadata key
IN, OUT, IF_CHANGED = "in", "out", "if-changed"


def _declared(how: str, default: Any, factory: Any) -> Any:
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata={ID: how})
    return dataclasses.field(default=default, metadata={ID: how})


def not_in_id(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING) -> Any:
    """A config field that enters no stage id."""
    return _declared(OUT, default, factory)


def in_id_if_changed(default: Any = dataclasses.MISSING, *, factory: Any = dataclasses.MISSING) -> Any:
    """A config field that enters a stage id only where its value differs from its default."""
    return _declared(IF_CHANGED, default, factory)


def id_rule(f: dataclasses.Field) -> str:
    """How field `f` enters stage ids: IN, OUT or IF_CHANGED."""
    return f.metadata.get(ID, IN)


def field_default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def identity(cfg: Any) -> dict[str, Any]:
    """`cfg` (a config dataclass) as it enters stage ids: its fields as plain data by their declared rule, nested
    configs (and lists of them) by their own."""
    out = {}
    for f in dataclasses.fields(cfg):
        value, rule = getattr(cfg, f.name), id_rule(f)
        if rule == OUT or (rule == IF_CHANGED and value == field_default(f)):
            continue
        out[f.name] = _identity_value(value)
    return out


def _identity_value(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return identity(value)
    if isinstance(value, list | tuple):
        return [_identity_value(v) for v in value]
    if isinstance(value, dict):
        return {k: _identity_value(v) for k, v in value.items()}
    return value


def keys_by_rule(cls: type, rule: str) -> dict[str, Any]:
    """{name: default} of the fields of config class `cls` declared with `rule`."""
    return {f.name: field_default(f) for f in dataclasses.fields(cls) if id_rule(f) == rule}
