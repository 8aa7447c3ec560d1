"""Hashing methods, one file each, registered by name.

Each method module declares its method once, in the class ``METHOD`` names (see
rshash.methods.base.HashMethod): its parameters with defaults (``Params``), what it
reads (``inputs``), whether it has a class head and so which rankings it supports,
and its fit/encode. The registry maps names to modules, imported on first use; a
method module imports torch inside functions only, so reading declarations (the
workflow does at parse time) and training ``lsh`` never import torch.
"""

from __future__ import annotations

import importlib
import pkgutil

from rshash import RshashError

# Not methods: the base class, the shared torch helpers, the convergence policy and the
# parameter machinery.
_SUPPORT = {"base", "convergence", "nets", "params"}
# name -> module: every module of this package is one method, named by its file
REGISTRY = {
    m.name: f"{__name__}.{m.name}"
    for m in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name)
    if m.name not in _SUPPORT
}


def method_names() -> list[str]:
    return sorted(REGISTRY)


def get_method(name: str):
    """The method class registered under ``name``: its declaration and implementation."""
    if name not in REGISTRY:
        raise RshashError(f"unknown hashing method '{name}'; known: {', '.join(method_names())}")
    return importlib.import_module(REGISTRY[name]).METHOD


method_info = get_method  # what a method declares (inputs, Params, rankings) is its class


def build(name: str, bits: int, seed: int = 0, threads: int = 1, **params):
    return get_method(name)(bits=bits, seed=seed, threads=threads, **params)
