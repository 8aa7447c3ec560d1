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

from rshash import RshashError

REGISTRY = {
    "raw": "rshash.methods.raw",
    # unsupervised and kernel-supervised baselines
    "lsh": "rshash.methods.lsh",
    "itq": "rshash.methods.itq",
    "sh": "rshash.methods.sh",
    "pcah": "rshash.methods.pcah",
    "ksh": "rshash.methods.ksh",
    # the five source papers
    "milan": "rshash.methods.milan",
    "dmch": "rshash.methods.dmch",
    "dhcnn": "rshash.methods.dhcnn",
    "dah": "rshash.methods.dah",
    "pbffn": "rshash.methods.pbffn",
    # deep hashing losses on the same MLP
    "dpsh": "rshash.methods.dpsh",
    "hashnet": "rshash.methods.hashnet",
    "greedyhash": "rshash.methods.greedyhash",
    "dsh": "rshash.methods.dsh",
    "csq": "rshash.methods.csq",
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
