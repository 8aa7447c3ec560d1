"""The verb registry: each verb declares its arguments beside its function.

A module of verbs decorates each ``cmd_*`` function with :func:`verb`, giving the
verb's name (``"index build"`` for a subcommand of ``index``), its help line and its
arguments (:func:`arg`, :func:`one_of` for a mutually exclusive group). The CLI's
parser is built from :data:`VERBS`, in the order the verbs were declared.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from rshash import RshashError


@dataclass(frozen=True)
class Arg:
    """One ``add_argument`` call: its flags (or positional name) and keywords."""

    flags: tuple[str, ...]
    options: dict = field(default_factory=dict)

    def add_to(self, parser) -> None:
        parser.add_argument(*self.flags, **self.options)


@dataclass(frozen=True)
class OneOf:
    """A mutually exclusive group of arguments (``required``: exactly one of them)."""

    args: tuple[Arg, ...]
    required: bool = False

    def add_to(self, parser) -> None:
        group = parser.add_mutually_exclusive_group(required=self.required)
        for a in self.args:
            a.add_to(group)


def arg(*flags: str, **options) -> Arg:
    return Arg(flags, options)


def required(*flags: str) -> tuple[Arg, ...]:
    """Options every call must give, one ``arg(flag, required=True)`` each."""
    return tuple(Arg((flag,), {"required": True}) for flag in flags)


def one_of(*args: Arg, required: bool = False) -> OneOf:
    return OneOf(args, required)


@dataclass(frozen=True)
class Verb:
    name: str  # "index build": the subcommand build of the verb index
    help: str
    args: tuple[Arg | OneOf, ...]
    func: Callable | None  # None: a verb that only groups subcommands

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.name.split())


VERBS: dict[str, Verb] = {}


def verb(name: str, help: str, *args: Arg | OneOf):
    """Register the decorated ``cmd_*`` function as verb ``name`` with ``args``."""

    def register(func: Callable) -> Callable:
        if name in VERBS:
            raise ValueError(f"verb {name!r} declared twice")
        VERBS[name] = Verb(name, help, tuple(args), func)
        return func

    return register


def group(name: str, help: str, *args: Arg | OneOf, func: Callable | None = None) -> None:
    """Register verb ``name`` whose subcommands are declared as ``"name sub"``; ``func``
    (optional) runs when no subcommand is given, with ``args`` parsed."""
    if name in VERBS:
        raise ValueError(f"verb {name!r} declared twice")
    VERBS[name] = Verb(name, help, tuple(args), func)


def build_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    """The parser of every registered verb; each sets ``func`` and ``command`` (its full
    name, for error lines). A verb with subcommands needs one unless it has a function."""
    top = argparse.ArgumentParser(prog=prog, description=description)
    parsers: dict[tuple[str, ...], argparse.ArgumentParser] = {(): top}
    subparsers: dict[tuple[str, ...], argparse._SubParsersAction] = {}
    for v in VERBS.values():
        parent = v.path[:-1]
        if parent not in subparsers:
            subparsers[parent] = parsers[parent].add_subparsers(
                dest="_".join(("verb", *parent)),
                required=not parent or VERBS[" ".join(parent)].func is None,
            )
        p = subparsers[parent].add_parser(v.path[-1], help=v.help)
        for a in v.args:
            a.add_to(p)
        if v.func is not None:
            p.set_defaults(func=v.func, command=v.name)
        parsers[v.path] = p
    return top


def _json(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise RshashError(f"not valid JSON: {text!r} ({err})") from None
