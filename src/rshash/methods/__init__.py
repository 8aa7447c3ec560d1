"""Hashing methods, one file each, registered by name.

A method module defines a class with ``name``, ``fit(X, y)``, ``encode(X)``
and ``state()`` / ``load_state()`` (see rshash.methods.base). Modules are
imported lazily so that a job training ``lsh`` never imports torch; what
the workflow needs to know at parse time (which rankings a method
supports) is declared here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from rshash import RshashError


@dataclass(frozen=True)
class MethodInfo:
    target: str  # "module:Class"
    real_valued: bool = False  # bits = 0: no binary codes (the `raw` reference)
    class_head: bool = False  # writes class_prob and predicted_label
    # what fit/encode read: "features" (pooled, [N, D]); "maps" (last conv maps);
    # "layers" (pooled features of three stages); "rot" (the rotated copies)
    inputs: tuple[str, ...] = ("features",)

    @property
    def rankings(self) -> tuple[str, ...]:
        """The rankings its codes support (rshash.search)."""
        if self.real_valued:
            return ("euclidean",)
        return ("hamming", "coarse_to_fine", "euclidean",
                *(("category_weighted",) if self.class_head else ()))

    @property
    def default_rankings(self) -> tuple[str, ...]:
        return ("euclidean",) if self.real_valued else ("hamming",)


REGISTRY = {
    "raw": MethodInfo("rshash.methods.raw:Raw", real_valued=True),
    # unsupervised and kernel-supervised baselines
    "lsh": MethodInfo("rshash.methods.lsh:LSH"),
    "itq": MethodInfo("rshash.methods.itq:ITQ"),
    "sh": MethodInfo("rshash.methods.sh:SH"),
    "pcah": MethodInfo("rshash.methods.pcah:PCAH"),
    "ksh": MethodInfo("rshash.methods.ksh:KSH"),
    # the five source papers
    "milan": MethodInfo("rshash.methods.milan:MiLaN"),
    "dmch": MethodInfo("rshash.methods.dmch:DMCH", class_head=True),
    "dhcnn": MethodInfo("rshash.methods.dhcnn:DHCNN", class_head=True),
    "dah": MethodInfo("rshash.methods.dah:DAH", class_head=True, inputs=("maps",)),
    "pbffn": MethodInfo("rshash.methods.pbffn:PBFFN", class_head=True,
                        inputs=("layers", "rot")),
    # deep hashing losses on the same MLP
    "dpsh": MethodInfo("rshash.methods.dpsh:DPSH"),
    "hashnet": MethodInfo("rshash.methods.hashnet:HashNet"),
    "greedyhash": MethodInfo("rshash.methods.greedyhash:GreedyHash", class_head=True),
    "dsh": MethodInfo("rshash.methods.dsh:DSH"),
    "csq": MethodInfo("rshash.methods.csq:CSQ"),
}


def method_names() -> list[str]:
    return sorted(REGISTRY)


def method_info(name: str) -> MethodInfo:
    if name not in REGISTRY:
        raise RshashError(f"unknown hashing method '{name}'; known: {', '.join(method_names())}")
    return REGISTRY[name]


def get_method(name: str):
    """The method class registered under ``name``."""
    module, cls = method_info(name).target.split(":")
    return getattr(importlib.import_module(module), cls)


def build(name: str, bits: int, seed: int = 0, threads: int = 1, **params):
    return get_method(name)(bits=bits, seed=seed, threads=threads, **params)
