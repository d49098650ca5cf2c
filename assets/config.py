"""Dagster configuration generated from the library's typed specs, so each setting is defined once.

A spec is a frozen dataclass in `pipeline/` whose fields carry their help text as
`field(default=..., metadata={"help": ...})`. `spec_config` turns one or more specs into a Dagster
`Config` (or, with `base=`, a `ConfigurableResource`) with the same field names, the same defaults
and the help as each field's description (what the launchpad shows). Tuples become lists, nested
spec dataclasses nested configs; `to_spec` turns the values back into the spec in one call.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Optional, Union, get_args, get_origin, get_type_hints

import pydantic
from dagster import Config

HELP = "help"
"""The metadata key of a spec field's help text."""

_MIRRORS: dict[type, type] = {}

OP_CONFIGS: dict[str, type] = {}
"""The config class of every op that takes run config (`ops: <name>: config:`), filled as each
asset module defines its config with `op_config`; `assets.definitions` imports them all."""


def op_config(op: str) -> typing.Callable[[type], type]:
    """Register a class as the run config of op `op`, so the whole run's config can be checked
    before any step starts (`assets.preflight`)."""
    def register(cls: type) -> type:
        if OP_CONFIGS.setdefault(op, cls) is not cls:
            raise TypeError(f"op {op!r} already has the config {OP_CONFIGS[op].__name__}")
        return cls
    return register


def spec_fields(spec: type) -> list[dataclasses.Field]:
    """The fields of `spec` that configuration sets: those with help text."""
    return [f for f in dataclasses.fields(spec) if HELP in f.metadata]


def _default(spec_field: dataclasses.Field) -> Any:
    if spec_field.default is not dataclasses.MISSING:
        return spec_field.default
    if spec_field.default_factory is not dataclasses.MISSING:
        return spec_field.default_factory()
    return dataclasses.MISSING


def _config_type(hint: Any) -> Any:
    """The pydantic type Dagster can show for a spec field's type."""
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return mirror(hint)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        inner = _config_type(Union[tuple(args)]) if len(args) > 1 else _config_type(args[0])
        return Optional[inner] if len(args) < len(get_args(hint)) else inner
    if origin in (tuple, list):
        return list[_config_type(get_args(hint)[0])]
    return hint


def _config_value(value: Any, nested: bool = False) -> Any:
    """A spec default as the config's default: tuples as lists, a spec dataclass as its mirror (as
    a plain dict inside a list: Dagster checks list defaults against the schema as data)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        values = {f.name: _config_value(getattr(value, f.name), True) for f in spec_fields(type(value))}
        return values if nested else mirror(type(value))(**values)
    if isinstance(value, (tuple, list)):
        return [_config_value(v, True) for v in value]
    return value


def _spec_value(value: Any, hint: Any) -> Any:
    """A config value as the spec's: lists back to tuples, mirrors back to their specs."""
    if isinstance(value, SpecConfig):
        return value.to_spec(_spec_of(hint))
    if isinstance(value, dict) and dataclasses.is_dataclass(_spec_of(hint)):
        spec = _spec_of(hint)
        return mirror(spec)(**value).to_spec(spec)
    if isinstance(value, list):
        item = next((a for a in get_args(_strip_optional(hint)) if a is not Ellipsis), Any)
        converted = [_spec_value(v, item) for v in value]
        return tuple(converted) if get_origin(_strip_optional(hint)) is tuple else converted
    return value


def _strip_optional(hint: Any) -> Any:
    if get_origin(hint) in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _spec_of(hint: Any) -> Any:
    hint = _strip_optional(hint)
    return hint if dataclasses.is_dataclass(hint) else None


class SpecConfig:
    """Mixed into every generated class: the way back to the specs it mirrors."""

    __specs__: typing.ClassVar[tuple[type, ...]] = ()

    def to_spec(self, spec: type | None = None, **others: Any) -> Any:
        """The spec (`spec`, default the only one mirrored) with this config's values; `others`
        sets the spec's fields that configuration does not (e.g. a shared resource's value)."""
        if spec is None:
            if len(self.__specs__) != 1:
                raise TypeError(f"{type(self).__name__} mirrors {len(self.__specs__)} specs: name one")
            spec = self.__specs__[0]
        hints = get_type_hints(spec)
        values = {f.name: _spec_value(getattr(self, f.name), hints[f.name]) for f in spec_fields(spec)}
        return spec(**values, **others)


def _valid_specs(config: Any) -> Any:
    """Build every spec a config mirrors, so its checks (ranges, names, policies) reject a bad value
    when the config is made, not when the step that uses it is reached."""
    for spec in config.__specs__:
        config.to_spec(spec)
    return config


def spec_config(*specs: type, base: type = Config, name: str | None = None) -> type:
    """A pydantic class on `base` (a Dagster `Config` or `ConfigurableResource`) with the configurable
    fields of `specs`: same names, same defaults, help as description. Subclass it to add methods."""
    fields: dict[str, Any] = {}
    for spec in specs:
        hints = get_type_hints(spec)
        for f in spec_fields(spec):
            if f.name in fields:
                raise TypeError(f"{f.name!r} is defined by two specs of {name or specs[0].__name__}")
            default = _default(f)
            info = pydantic.Field(description=f.metadata[HELP]) if default is dataclasses.MISSING else \
                pydantic.Field(default=_config_value(default), description=f.metadata[HELP])
            fields[f.name] = (_config_type(hints[f.name]), info)
    title = name or f"{specs[0].__name__}Fields"
    model = pydantic.create_model(title, __base__=(base, SpecConfig), __module__=__name__,
                                  __validators__={"_valid_specs": pydantic.model_validator(mode="after")(_valid_specs)},
                                  **fields)
    model.__specs__ = specs
    return model


def mirror(spec: type) -> type:
    """The plain `Config` mirror of one spec (nested specs use it); one class per spec."""
    if spec not in _MIRRORS:
        _MIRRORS[spec] = spec_config(spec, name=f"{spec.__name__}Config")
        _MIRRORS[spec].__doc__ = spec.__doc__
    return _MIRRORS[spec]
