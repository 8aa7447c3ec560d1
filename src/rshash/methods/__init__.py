"""Hashing methods, one file each, registered by name.

A method module defines a class with ``name``, ``fit(X, y)``, ``encode(X)``
and ``state()`` / ``from_state()`` (see rshash.methods.base). Modules are
imported lazily so that a job training ``lsh`` never imports torch.
"""

from __future__ import annotations

import importlib

from rshash import RshashError

# name -> "module:Class"
REGISTRY = {
    "lsh": "rshash.methods.lsh:LSH",
    "itq": "rshash.methods.itq:ITQ",
    "milan": "rshash.methods.milan:MiLaN",
}


def method_names() -> list[str]:
    return sorted(REGISTRY)


def get_method(name: str):
    """The method class registered under ``name``."""
    if name not in REGISTRY:
        raise RshashError(f"unknown hashing method '{name}'; known: {', '.join(method_names())}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build(name: str, bits: int, seed: int = 0, threads: int = 1, **params):
    return get_method(name)(bits=bits, seed=seed, threads=threads, **params)
