"""Command-line options generated from pydantic models: each option is declared once, as a field.

A field's type, default and `description=` (the help text) make the option. Its
flag (`--shard-size`) derives from the field name and its environment variable
(`HUMANTAG_SHARD_SIZE`) from the flag; `json_schema_extra` may override them:

    flag="--out", short="-o", env="AWS_REGION" or ["AWS_REGION", "AWS_DEFAULT_REGION"],
    secret=True (never stored in a deployment), argument=True (positional), cli=False (no flag)

A nested model field contributes its fields, flattened; the nested field may give a
prefix for them: json_schema_extra={"flag_prefix": "opensearch-", "env_prefix": "OPENSEARCH_"}.
An Optional nested model is None unless its required fields are given.
"""

from __future__ import annotations

import enum
import functools
import inspect
import json
import os
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

import typer
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from humantag.flows.errors import UserError

ENV_PREFIX = "HUMANTAG_"
Path = tuple[str, ...]


@dataclass(frozen=True)
class Option:
    path: Path  # where the value goes in the model, e.g. ("pool", "replicas")
    flag: str  # "--replicas"
    short: Optional[str]
    envvar: tuple[str, ...]
    annotation: Any  # the type typer sees
    default: Any
    help: str
    secret: bool
    argument: bool
    required: bool
    optional_group: Optional[Path]  # set: the value belongs to an Optional nested model
    parse: Callable[[Any], Any] = field(compare=False)

    @property
    def primary(self) -> str:
        """The flag without its off-switch: "--opensearch-verify-certs" of "--opensearch-verify-certs/--opensearch-insecure"."""
        return self.flag.split("/")[0]

    @property
    def param(self) -> str:
        return self.primary.lstrip("-").replace("-", "_")


def _extra(info: FieldInfo) -> dict[str, Any]:
    extra = info.json_schema_extra
    return dict(extra) if isinstance(extra, dict) else {}


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _parse_key_values(pairs: Iterable[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"expects KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def _json_or_text(value: Any) -> Any:
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


def _cli_type(annotation: Any) -> tuple[Any, Callable[[Any], Any]]:
    """(type typer understands, CLI value -> model input)."""
    identity: Callable[[Any], Any] = lambda value: value  # noqa: E731
    if annotation in (bool, int, float, str):
        return annotation, identity
    if annotation is SecretStr:
        return str, identity
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return annotation, identity
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        choices = enum.Enum("Choices", {str(a): str(a) for a in args}, type=str)  # type: ignore[misc]
        return choices, lambda value: value.value if isinstance(value, enum.Enum) else value
    if origin in (list, tuple, set, frozenset) and args and args[0] in (str, int, float):
        return list[args[0]], list  # type: ignore[valid-type]
    if origin is dict:
        return list[str], _parse_key_values
    # Anything else: JSON (or plain text), validated by the model.
    return str, _json_or_text


def options_of(model: type[BaseModel], *, path: Path = (), flag_prefix: str = "", env_prefix: str = ENV_PREFIX,
               optional_group: Optional[Path] = None) -> list[Option]:
    """The options of `model` and its nested models, in field order."""
    out: list[Option] = []
    for name, info in model.model_fields.items():
        extra = _extra(info)
        if extra.get("cli") is False:
            continue
        annotation, optional = _unwrap_optional(info.annotation)
        if _is_model(annotation):
            out += options_of(
                annotation, path=path + (name,), flag_prefix=flag_prefix + extra.get("flag_prefix", ""),
                env_prefix=extra.get("env_prefix", env_prefix),
                optional_group=optional_group if optional_group is not None else (path + (name,) if optional else None),
            )
            continue
        cli_type, parse = _cli_type(annotation)
        flag = extra.get("flag") or f"--{flag_prefix}{name.replace('_', '-')}"
        stem = flag.split("/")[0].lstrip("-").removeprefix(flag_prefix)
        env = extra.get("env") or f"{env_prefix}{stem.replace('-', '_').upper()}"
        default = info.get_default(call_default_factory=True)
        required = default is PydanticUndefined
        out.append(Option(
            path=path + (name,),
            flag=flag,
            short=extra.get("short"),
            envvar=tuple([env] if isinstance(env, str) else env),
            annotation=cli_type,
            default=None if required else default,
            help=info.description or "",
            secret=bool(extra.get("secret")) or annotation is SecretStr,
            argument=bool(extra.get("argument")),
            required=required,
            optional_group=optional_group,
            parse=parse,
        ))
    flags = [o.primary for o in out]
    clashes = {f for f in flags if flags.count(f) > 1}
    if clashes:
        raise TypeError(f"{model.__name__}: two fields make the same flag {sorted(clashes)}; give one json_schema_extra flag=")
    return out


def model_from_values(model: type[BaseModel], options: list[Option], values: Mapping[str, Any],
                      fixed: Optional[Mapping[Path, Any]] = None) -> Any:
    """Build `model` from CLI values keyed by Option.param; `fixed` sets paths that are not flags."""
    data: dict[str, Any] = {}
    missing_groups: set[Path] = set()
    for opt in options:
        value = values.get(opt.param, opt.default)
        if value is None or (isinstance(value, (list, tuple, dict)) and not value and not opt.default):
            if opt.required and opt.optional_group is not None:
                missing_groups.add(opt.optional_group)
            continue
        try:
            parsed = opt.parse(value)
        except UserError as exc:
            raise UserError(f"{opt.primary} {exc}") from None
        _put(data, opt.path, parsed)
    for group in missing_groups:
        _pop(data, group)
    for path, value in (fixed or {}).items():
        _put(data, path, value)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise UserError(describe_validation_error(exc, options)) from None


def describe_validation_error(exc: ValidationError, options: list[Option]) -> str:
    """The first error, named by its flag: '--shard-size: Input should be greater than or equal to 1'."""
    first = exc.errors()[0]
    loc = tuple(str(p) for p in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    for opt in options:
        if loc[: len(opt.path)] == opt.path:
            name = opt.path[-1].upper() if opt.argument else opt.primary
            return f"{name}: {message}"
    return message


def _put(data: dict[str, Any], path: Path, value: Any) -> None:
    for key in path[:-1]:
        data = data.setdefault(key, {})
    data[path[-1]] = value


def _pop(data: dict[str, Any], path: Path) -> None:
    if not path:
        data.clear()
        return
    for key in path[:-1]:
        data = data.get(key, {})
    data.pop(path[-1], None)


_METAVARS = {str: "TEXT", int: "INT", float: "NUMBER"}


def typer_parameter(opt: Option, default: Any = None) -> inspect.Parameter:
    value = opt.default if default is None else default
    if typing.get_origin(opt.annotation) is list:  # repeatable: typer wants a list ({} of KEY=VALUE: none given)
        value = list(value) if isinstance(value, (list, tuple)) else []
    required = opt.required and opt.optional_group is None
    if opt.argument:
        spec = typer.Argument(... if required else value, help=opt.help, metavar=opt.path[0].upper(), show_default=False)
    else:
        flag = opt.flag
        if opt.annotation is bool and "/" not in flag and value is True:
            flag = f"{flag}/--no-{flag.lstrip('-')}"  # on by default: say how to turn it off
        inner = typing.get_args(opt.annotation)[0] if typing.get_origin(opt.annotation) is list else opt.annotation
        spec = typer.Option(
            ... if required else value, flag, *([opt.short] if opt.short else []), envvar=list(opt.envvar),
            show_envvar=True, help=opt.help, metavar=_METAVARS.get(inner),
            show_default=not opt.secret and value not in (None, [], (), {}),
        )
    annotation = opt.annotation if required or value is not None else Optional[opt.annotation]
    return inspect.Parameter(opt.param, inspect.Parameter.KEYWORD_ONLY, default=spec, annotation=annotation)


def command(handler: Callable[..., Any], options: list[Option], *, doc: str,
            defaults: Optional[Mapping[Path, Any]] = None, name: Optional[str] = None) -> Callable[..., Any]:
    """A typer command whose parameters are `options` (positional arguments first).

    `handler(**values)` receives the values keyed by Option.param.
    """
    defaults = defaults or {}
    ordered = [o for o in options if o.argument] + [o for o in options if not o.argument]
    params = [typer_parameter(o, defaults.get(o.path)) for o in ordered]

    @functools.wraps(handler)
    def cmd(**values: Any) -> Any:
        return handler(**values)

    cmd.__name__ = name or handler.__name__
    cmd.__doc__ = doc
    cmd.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    cmd.__annotations__ = {p.name: p.annotation for p in params}
    del cmd.__wrapped__  # typer must read the generated signature, not the handler's
    return cmd


def secret_paths(options: list[Option]) -> list[Path]:
    return [o.path for o in options if o.secret]


def fill_secrets_from_env(config: BaseModel, options: list[Option]) -> Any:
    """Secrets left out of a stored configuration come from the environment of whoever runs it."""
    data = config.model_dump()
    changed = False
    for opt in options:
        if not opt.secret:
            continue
        parent = data
        for key in opt.path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(parent, dict) or parent.get(opt.path[-1]) is not None:
            continue
        value = next((os.environ[e] for e in opt.envvar if os.environ.get(e)), None)
        if value is not None:
            parent[opt.path[-1]] = value
            changed = True
    return type(config).model_validate(data) if changed else config


def dump_without_secrets(config: BaseModel, options: list[Option]) -> dict[str, Any]:
    data = config.model_dump(mode="json")
    for path in secret_paths(options):
        parent: Any = data
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if isinstance(parent, dict):
            parent[path[-1]] = None
    return data
