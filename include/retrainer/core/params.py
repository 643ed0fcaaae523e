"""The run parameters, declared once and turned into every form a runner needs.

A parameter is a field of one of the config groups in :mod:`retrainer.core.config`, declared with
:func:`param` (default, bounds, choices, help, whether it changes the trained model). From those
declarations come the Airflow DAG's ``Param`` form (as JSON-schema keyword arguments, so this module
needs no Airflow), the ``retrainer`` CLI flags, validation, and the argv a launcher hands to a worker
process, which parses back into an identical config.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

SPEC_KEY = "retrainer.param"
_MISSING: Any = dataclasses.MISSING


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """What a runner needs to know about one parameter besides its name and type (from the field)."""

    help: str
    title: str = ""
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None
    choices: tuple[str, ...] | None = None
    pattern: str | None = None  # a string parameter's whole value must match this regular expression
    changes_model: bool = False
    env: str | None = None  # an environment variable that supplies the default
    flag: str | None = None  # CLI flag when it is not --<name-with-dashes>
    # May carry credentials (a URI's user:password, a token): never written on a command line (which every
    # user of the machine can read, and which Airflow logs), handed to another process in ``env`` instead.
    secret: bool = False


def param(
    default: Any = _MISSING,
    *,
    help: str,  # noqa: A002 - argparse's name for it
    default_factory: Callable[[], Any] | Any = _MISSING,
    **spec: Any,
) -> Any:
    """A dataclass field that is also a run parameter. ``env`` makes the environment the default."""
    meta = ParamSpec(help=help, **spec)
    if meta.secret and meta.env is None:
        raise TypeError("a secret parameter needs an env variable to travel in")
    if meta.env is not None:
        fallback_factory, fallback = default_factory, default

        def from_env() -> Any:
            raw = os.environ.get(meta.env or "")
            if raw:
                return raw
            return fallback_factory() if fallback_factory is not _MISSING else fallback

        return dataclasses.field(default_factory=from_env, metadata={SPEC_KEY: meta})
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata={SPEC_KEY: meta})
    return dataclasses.field(default=default, metadata={SPEC_KEY: meta})


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One declared parameter: its group's field plus its spec."""

    group: str
    name: str
    type: type
    spec: ParamSpec
    default: Any

    @property
    def flag(self) -> str:
        return self.spec.flag or "--" + self.name.replace("_", "-")

    def convert(self, value: Any) -> Any:
        """A value from a flag, an env var, JSON or a form -> this parameter's type."""
        if value is None or isinstance(value, self.type) and not isinstance(value, bool):
            return value
        if self.type is dt.date:
            return value.date() if isinstance(value, dt.datetime) else dt.date.fromisoformat(str(value))
        if self.type is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(f"{self.name} must be an integer, got {value!r}")
            return int(value)
        return self.type(value)

    def problems(self, value: Any) -> list[str]:
        s, out = self.spec, []
        if s.minimum is not None and value < s.minimum:
            out.append(f"{self.name} must be >= {s.minimum:g}, got {value}")
        if s.maximum is not None and value > s.maximum:
            out.append(f"{self.name} must be <= {s.maximum:g}, got {value}")
        if s.exclusive_minimum is not None and not value > s.exclusive_minimum:
            out.append(f"{self.name} must be > {s.exclusive_minimum:g}, got {value}")
        if s.pattern is not None and not re.fullmatch(s.pattern, str(value)):
            out.append(f"{self.name} must match {s.pattern!r}, got {value!r}")
        if s.choices is not None and value not in s.choices:
            out.append(f"{self.name} must be one of {list(s.choices)}, got {value!r}")
        return out


_TYPES = {"int": int, "float": float, "str": str, "dt.date": dt.date, "bool": bool}


def parameters(group_cls: type) -> list[Parameter]:
    """The declared parameters of one config group, in declaration order."""
    out = []
    for f in dataclasses.fields(group_cls):
        spec = f.metadata.get(SPEC_KEY)
        if spec is None:
            continue
        ftype = _TYPES.get(f.type if isinstance(f.type, str) else getattr(f.type, "__name__", ""), None)
        if ftype is None:
            raise TypeError(f"{group_cls.__name__}.{f.name}: parameters must be int, float, str or date, got {f.type}")
        default = f.default if f.default is not _MISSING else None
        out.append(Parameter(group_cls.__name__, f.name, ftype, spec, default))
    return out


def validate_group(group: Any) -> list[str]:
    """Convert every declared field in place (frozen dataclass) and return what is out of bounds."""
    problems: list[str] = []
    for p in parameters(type(group)):
        try:
            value = p.convert(getattr(group, p.name))
        except (TypeError, ValueError) as exc:
            problems.append(f"{p.name}: {exc}")
            continue
        object.__setattr__(group, p.name, value)
        if value is not None:
            problems += p.problems(value)
    return problems


# --- generated views ---------------------------------------------------------------------------
def json_schema(p: Parameter) -> dict[str, Any]:
    """Keyword arguments for ``airflow.sdk.Param`` (a JSON schema): what the trigger form shows and checks."""
    kinds = {int: "integer", float: "number", str: "string"}
    schema: dict[str, Any] = {"type": kinds[p.type], "title": p.spec.title or p.name, "description": p.spec.help}
    for key, value in (
        ("minimum", p.spec.minimum),
        ("maximum", p.spec.maximum),
        ("exclusiveMinimum", p.spec.exclusive_minimum),
    ):
        if value is not None:
            schema[key] = value
    if p.spec.choices is not None:
        schema["enum"] = list(p.spec.choices)
    if p.spec.pattern is not None:
        schema["pattern"] = f"^({p.spec.pattern})$"
    return schema


def add_arguments(parser: argparse.ArgumentParser, params: list[Parameter], required: tuple[str, ...] = ()) -> None:
    """One flag per parameter; values stay None unless given, so defaults and env vars apply later."""
    for p in params:
        kwargs: dict[str, Any] = {"dest": p.name, "help": p.spec.help + (f" (env {p.spec.env})" if p.spec.env else "")}
        if p.type is dt.date:
            kwargs["type"] = date_arg
        elif p.spec.choices is None:
            kwargs["type"] = p.type
        if p.spec.choices is not None:
            kwargs["choices"] = p.spec.choices
        if p.default is not None and p.spec.env is None:
            kwargs["help"] += f" (default {p.default})"
        kwargs["required"] = p.name in required
        kwargs["help"] = kwargs["help"].replace("%", "%%")  # argparse %-formats help strings
        parser.add_argument(p.flag, **kwargs)


def date_arg(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def to_argv(groups: list[Any]) -> list[str]:
    """Every parameter of every group as explicit flags, but the secret ones (see :func:`secret_env`): a
    worker needs no defaults or env to agree on the rest."""
    argv: list[str] = []
    for group in groups:
        for p in parameters(type(group)):
            value = getattr(group, p.name)
            if value is not None and not p.spec.secret:
                argv += [p.flag, value.isoformat() if isinstance(value, dt.date) else str(value)]
    return argv


def secret_env(groups: list[Any]) -> dict[str, str]:
    """The secret parameters as the environment variables that supply them: what a process started with
    :func:`to_argv`'s flags needs in its environment to rebuild the same values."""
    return {
        str(p.spec.env): str(getattr(group, p.name))
        for group in groups
        for p in parameters(type(group))
        if p.spec.secret and getattr(group, p.name) is not None
    }


def given(namespace: argparse.Namespace, params: list[Parameter]) -> Iterator[tuple[str, Any]]:
    """The parameters a command line actually set."""
    for p in params:
        value = getattr(namespace, p.name, None)
        if value is not None:
            yield p.name, value
