"""One way for settings to be plain data: frozen dataclasses that validate and round-trip through JSON.

A settings class derives from :class:`Config`, is a ``@dataclass(frozen=True)``, checks its values
in ``validate`` (called from ``__post_init__``, so an invalid object never exists) and gets
``to_dict`` / ``from_dict`` from here. ``from_dict`` accepts partial dicts (missing keys keep their
defaults), rebuilds nested settings and tuples, and names unknown keys.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError

C = TypeVar("C", bound="Config")


class Config:
    """Mixin for frozen settings dataclasses: validation on creation, one dict form."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError for values out of range (subclasses override)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (nested settings become dicts, tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any] | None, *, name: str | None = None) -> C:
        """Settings from a (possibly partial) dict; ConfigError names an unknown key or a bad value."""
        name = name or cls.__name__
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{name} must be a mapping, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ConfigError(f"unknown {name} keys: {unknown}")
        hints = typing.get_type_hints(cls)
        kwargs = {key: _coerce(hints.get(key), value, f"{name}.{key}") for key, value in data.items()}
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"{name}: {exc}") from None

    @classmethod
    def load(cls: type[C], path: str | Path) -> C:
        """Read settings from a JSON file."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read settings ({exc})") from None
        return cls.from_dict(data, name=str(path))


def _coerce(hint: Any, value: Any, name: str) -> Any:
    """``value`` (as JSON holds it) in the shape ``hint`` asks for: nested Config, tuple or as is."""
    if value is None or hint is None:
        return value
    if isinstance(hint, type) and issubclass(hint, Config):
        return hint.from_dict(value, name=name)
    origin = typing.get_origin(hint)
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for arg in typing.get_args(hint):
            if isinstance(arg, type) and issubclass(arg, Config) and isinstance(value, dict):
                return arg.from_dict(value, name=name)
            if typing.get_origin(arg) is tuple and isinstance(value, list):
                return tuple(value)
    return value


def check(*conditions: tuple[bool, str]) -> None:
    """Raise ConfigError with the message of the first condition that does not hold."""
    for ok, message in conditions:
        if not ok:
            raise ConfigError(message)
