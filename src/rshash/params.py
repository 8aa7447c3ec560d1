"""Parameters of methods and rankings: a frozen dataclass each, checked against the values given.

Each method file declares ``class Params`` (subclassing :class:`Params` or a shared base
in ``rshash.methods.nets``) whose typed fields, with defaults, are its parameters;
``param(default, min=..., max=...)`` adds a range. An integer parameter is a count
(epochs, iterations, a batch, anchors, units, a schedule's step), and no count may be
larger than :data:`COUNT_MAX` unless its field declares a smaller maximum: a value a run
could never finish (``n_iter: 1000000000000``) stops with one line naming the key.
:meth:`Params.resolve` turns the mapping a config or command line gives into an
instance, refusing unknown names, wrong types and values out of range with one line
naming the key. It imports nothing heavy, so the workflow runs it at parse time
(``rshash.config.check_references``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping
from typing import Literal, Union, get_args, get_origin

from rshash import RshashError

# The largest any integer parameter may be unless its field declares its own maximum.
COUNT_MAX = 1_000_000


def _is_count(tp) -> bool:
    """An int, or a tuple of ints (e.g. hidden layer sizes), possibly optional."""
    if tp is int:
        return True
    origin = get_origin(tp)
    if origin in (Union, types.UnionType, tuple):
        return any(a is int or _is_count(a) for a in get_args(tp) if a is not Ellipsis)
    return False


def param(default=dataclasses.MISSING, *, min: float | None = None, max: float | None = None):
    """A parameter field with a default and an optional inclusive range (for a tuple,
    the range of each element). A subclass that redeclares the field with a plain
    default (``epochs: int = 30``) keeps the range declared here."""
    meta = {k: v for k, v in (("min", min), ("max", max)) if v is not None}
    return dataclasses.field(default=default, metadata=meta)


def _describe(tp) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in get_args(tp))
    if origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0])}"
        return f"a list of {len(args)} ({', '.join(_describe(a) for a in args)})"
    return {
        type(None): "null",
        bool: "true or false",
        int: "an integer",
        float: "a number",
        str: "a string",
    }.get(tp, getattr(tp, "__name__", str(tp)))


class _Bad(Exception):
    pass


def _coerce(value, tp, meta: dict):
    """``value`` as type ``tp`` (an int for a float, a list for a tuple); _Bad if it is not."""
    origin = get_origin(tp)
    if origin is Literal:
        if value in get_args(tp) and type(value) in {type(a) for a in get_args(tp)}:
            return value
        raise _Bad
    if origin in (Union, types.UnionType):
        for arg in get_args(tp):
            try:
                return _coerce(value, arg, meta)
            except _Bad:
                pass
        raise _Bad
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Bad
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], meta) for v in value)
        if len(value) != len(args):
            raise _Bad
        return tuple(_coerce(v, a, meta) for v, a in zip(value, args))
    if tp is type(None):
        if value is None:
            return None
        raise _Bad
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Bad
    if tp is int or tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Bad
        if tp is int and not isinstance(value, int):
            raise _Bad
        if isinstance(value, float) and not math.isfinite(value):
            raise _Bad
        out = tp(value)
        if "min" in meta and out < meta["min"] or "max" in meta and out > meta["max"]:
            raise _Bad
        return out
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Bad
    raise TypeError(f"unsupported parameter type {tp!r}")


def _num(v) -> str:
    return str(v) if isinstance(v, int) else f"{v:g}"


def _range(meta: dict) -> str:
    if "min" in meta and "max" in meta:
        return f" in [{_num(meta['min'])}, {_num(meta['max'])}]"
    if "min" in meta:
        return f" >= {_num(meta['min'])}"
    if "max" in meta:
        return f" <= {_num(meta['max'])}"
    return ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Params:
    """No parameters. Subclasses add typed fields with defaults (``param`` for ranges)
    and may override :meth:`check` for constraints between or on fields."""

    def check(self) -> tuple[str, str] | None:
        """(key, message) when the values break a constraint the types cannot state."""
        return None

    @classmethod
    @functools.cache
    def _hints(cls) -> dict:
        return typing.get_type_hints(cls)

    @classmethod
    def _meta(cls, name: str) -> dict:
        """The range of field ``name``: from the nearest class in the MRO that declares one;
        a count without a declared maximum is at most :data:`COUNT_MAX`."""
        meta = {}
        for klass in cls.__mro__:
            for f in dataclasses.fields(klass) if dataclasses.is_dataclass(klass) else ():
                if f.name == name and f.metadata and not meta:
                    meta = dict(f.metadata)
        if "max" not in meta and _is_count(cls._hints()[name]):
            meta["max"] = COUNT_MAX
        return meta

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def resolve(cls, given: Mapping | None, where: str) -> Params:
        """The parameters for the ``given`` values (the others at their defaults).
        ``where`` prefixes the key in messages, e.g. ``config: variants.x.params``."""
        if given is not None and not isinstance(given, Mapping):
            raise RshashError(
                f"{where}: expected a mapping of parameter names to values, got {given!r}"
            )
        given = dict(given or {})
        known = cls.names()
        for key in given:
            if key not in known:
                names = f"known: {', '.join(known)}" if known else "it takes none"
                raise RshashError(f"{where}.{key}: unknown parameter ({names})")
        hints = cls._hints()
        values = {}
        for key, value in given.items():
            meta = cls._meta(key)
            try:
                values[key] = _coerce(value, hints[key], meta)
            except _Bad:
                raise RshashError(
                    f"{where}.{key}: expected {_describe(hints[key])}{_range(meta)}, got {value!r}"
                ) from None
        params = cls(**values)
        problem = params.check()
        if problem is not None:
            raise RshashError(f"{where}.{problem[0]}: {problem[1]}")
        return params

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
