"""Stage configs: YAML files (or a section of one) parsed into dataclasses, with
``--set key=value`` overrides from the command line.

Unknown keys are errors that list the valid ones; values are checked against the field types,
so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from pipeline.core.errors import SlukdError

T = TypeVar("T")


class ConfigError(SlukdError, ValueError):
    """A config file or override that does not fit its dataclass (the CLI exits with status 2)."""

    exit_code = 2


def load_config(
    cls: type[T],
    path: str | os.PathLike | None = None,
    overrides: list[str] | None = None,
    section: str | None = None,
    siblings: tuple[str, ...] = (),
) -> T:
    """Build ``cls`` from defaults, then a YAML file (optionally one section of it), then overrides.

    Args:
        cls: a dataclass type.
        path: YAML file; ``None`` uses the defaults.
        overrides: ``["key=value", ...]``; values are parsed as YAML (``3``, ``0.5``, ``true``, ``[1, 2]``).
        section: top-level key of the file to read (``features``, ``teacher``, ...); a file without
            that key is read whole, unless it has one of ``siblings``.
        siblings: the file's other sections: a file that has one of them but not ``section`` gives
            ``section`` its defaults (an experiment config without an ``augment:`` block).

    Raises:
        ConfigError: unknown keys, values of the wrong type, unreadable files.
    """
    values = {**read_section(path, section, siblings), **parse_overrides(overrides)}
    where = f"{path}: " if path is not None else ""
    try:
        return from_dict(cls, values)
    except ConfigError as error:
        raise ConfigError(f"{where}{error}") from None


def read_section(
    path: str | os.PathLike | None, section: str | None = None, siblings: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The mapping in a YAML file (its ``section`` when the file has one); ``{}`` without a file, or
    when the file has one of the ``siblings`` sections but not ``section``."""
    if path is None:
        return {}
    path = Path(path)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values")
    if section is not None and isinstance(loaded.get(section), dict):
        return dict(loaded[section])
    if section is not None and any(name in loaded for name in siblings):
        return {}
    return loaded


def parse_overrides(overrides: list[str] | None) -> dict[str, Any]:
    """``["key=value", ...]`` with YAML-parsed values (``3``, ``0.5``, ``true``, ``[1, 2]``)."""
    values: dict[str, Any] = {}
    for override in overrides or []:
        key, separator, text = override.partition("=")
        if not separator or not key.strip():
            raise ConfigError(f"override {override!r} is not key=value")
        values[key.strip()] = yaml.safe_load(text) if text.strip() else ""
    return values


def from_dict(cls: type[T], values: dict[str, Any]) -> T:
    """Instantiate dataclass ``cls`` from ``values``, checking names and types."""
    fields = {field.name: field for field in dataclasses.fields(cls) if field.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown {cls.__name__} key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    converted = {name: _convert(name, value, hints[name]) for name, value in values.items()}
    try:
        return cls(**converted)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{cls.__name__}: {error}") from None


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass as plain JSON/YAML-ready values (tuples become lists)."""
    return _plain(dataclasses.asdict(config))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _convert(name: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    arguments = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in arguments:
            return None
        errors = []
        for option in (a for a in arguments if a is not type(None)):
            try:
                return _convert(name, value, option)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0])
    if hint is Any:
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        item_hint = arguments[0] if arguments else Any
        items = [_convert(name, item, item_hint) for item in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
        return value
    if hint is Path:
        return Path(value)
    return value
