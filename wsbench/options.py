"""Typed plugin options.

Every plugin class declares its options as a dataclass named ``Options``::

    @dataclass
    class Options:
        t0: float = option(0.3, "time the patch is brought to before guided generation")
        loss: str = option("logit", "guidance loss", choices=("logit", "bce"))

``parse_options(cls, {"t0": "0.5"})`` coerces strings from the command line (``-o segmenter.t0=0.5``)
to the declared types and rejects unknown names, ill-typed values and values outside ``choices``
with an :class:`~wsbench.errors.OptionError` that lists the valid options and their defaults.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from wsbench.errors import OptionError


def option(default: Any, help: str, *, choices: tuple | None = None) -> Any:
    """Declare one option field with a default, a one-line help text and optional choices."""
    meta = {"help": help, "choices": tuple(choices) if choices else None}
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class NoOptions:
    """A plugin without options."""


def _resolved_types(opts_cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(opts_cls)
    except Exception:  # pragma: no cover - unresolvable annotations: fall back to raw
        return {f.name: f.type for f in fields(opts_cls)}


def describe_options(opts_cls: type) -> list[dict[str, Any]]:
    """Name, type, default, help and choices of each option, for ``wsbench ls`` and errors."""
    hints = _resolved_types(opts_cls)
    out = []
    for f in fields(opts_cls):
        default = f.default if f.default is not MISSING else (
            f.default_factory() if f.default_factory is not MISSING else None)
        out.append({
            "name": f.name,
            "type": _type_name(hints.get(f.name, f.type)),
            "default": default,
            "help": f.metadata.get("help", ""),
            "choices": f.metadata.get("choices"),
        })
    return out


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " | ".join(_type_name(a) for a in args) + " | None"
    if origin in (tuple, list):
        return f"{origin.__name__}[{', '.join('...' if a is Ellipsis else _type_name(a) for a in typing.get_args(tp))}]"
    return getattr(tp, "__name__", str(tp))


def _valid_list(opts_cls: type) -> str:
    items = [f"{d['name']} ({d['type']}, default {d['default']!r})" for d in describe_options(opts_cls)]
    return ", ".join(items) if items else "none"


_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n"}


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or (origin is not None and "UnionType" in str(origin)):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            if type(None) in args:
                return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except (ValueError, TypeError) as e:
                errors.append(str(e))
        raise ValueError("; ".join(errors))
    if origin in (tuple, list):
        if isinstance(value, str):
            parts = [p for p in value.replace(";", ",").split(",") if p.strip() != ""]
        else:
            parts = list(value)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(parts) != len(args):
                raise ValueError(f"expected {len(args)} comma-separated values, got {len(parts)}")
            return tuple(_coerce(p, a, where) for p, a in zip(parts, args))
        elem = args[0] if args else str
        seq = [_coerce(p.strip() if isinstance(p, str) else p, elem, where) for p in parts]
        return tuple(seq) if origin is tuple else seq
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueError(f"expected a boolean (true/false), got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ValueError(f"expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ValueError(f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            v = float(value)
        else:
            try:
                v = float(str(value).strip())
            except ValueError:
                raise ValueError(f"expected a number, got {value!r}") from None
        if v != v:  # NaN is never a meaningful option value
            raise ValueError("NaN is not allowed")
        return v
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"expected a string, got {value!r}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value).expanduser()
        raise ValueError(f"expected a path, got {value!r}")
    return value


def parse_options(plugin_cls: type, values: Mapping[str, Any] | None) -> Any:
    """Validate ``values`` against ``plugin_cls.Options`` and return an Options instance.

    Raises :class:`OptionError` naming the plugin, the bad option, and listing the valid
    options with their defaults.
    """
    opts_cls = getattr(plugin_cls, "Options", NoOptions)
    label = f"{getattr(plugin_cls, 'role', 'plugin')} '{getattr(plugin_cls, 'name', plugin_cls.__name__)}'"
    values = dict(values or {})
    known = {f.name: f for f in fields(opts_cls)}
    hints = _resolved_types(opts_cls)
    kwargs = {}
    for key, raw in values.items():
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.5)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise OptionError(
                f"unknown option '{key}' for {label}{hint}; valid options: {_valid_list(opts_cls)}")
        f = known[key]
        try:
            v = _coerce(raw, hints.get(key, f.type), key)
        except (ValueError, TypeError) as e:
            raise OptionError(
                f"bad value for option '{key}' of {label}: {e}; valid options: {_valid_list(opts_cls)}"
            ) from None
        choices = f.metadata.get("choices")
        if choices and v not in choices:
            raise OptionError(
                f"bad value {v!r} for option '{key}' of {label}; choose one of {', '.join(map(str, choices))}")
        kwargs[key] = v
    opts = opts_cls(**kwargs)
    check = getattr(opts, "validate", None)
    if callable(check):
        try:
            check()
        except ValueError as e:
            raise OptionError(f"invalid options for {label}: {e}") from None
    return opts


def options_to_dict(opts: Any) -> dict[str, Any]:
    """JSON-friendly dict of an Options instance (paths as strings, tuples as lists)."""
    def conv(v):
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (tuple, list)):
            return [conv(x) for x in v]
        return v
    return {k: conv(v) for k, v in dataclasses.asdict(opts).items()}


def parse_assignments(text: str, where: str = "--config") -> dict[str, str]:
    """``"t0=0.4,scale=0.2"`` → ``{"t0": "0.4", "scale": "0.2"}`` (values stay strings: the
    plugin's typed options coerce and validate them). A part without ``=`` raises
    :class:`OptionError` naming ``where``."""
    out: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise OptionError(f"{where} {text!r}: expected KEY=VALUE[,KEY=VALUE...], got {part!r}")
        k, v = part.split("=", 1)
        out[k.strip()] = v.strip()
    return out
