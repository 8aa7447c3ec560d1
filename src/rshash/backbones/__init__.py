"""Frozen backbones: the bundled ones, registered by name, and any timm or
OpenCLIP model named by a config entry.

Each is a :class:`BackboneSpec`: preprocessing, feature dimension, where its
weights file lives and how to build the pooled-feature module from it. A
config entry (``{timm: NAME}``, ``{open_clip: CONFIG, pretrained: TAG}``,
``{open_clip: CONFIG, weights: FILE}``, or ``{}`` for a registered name) becomes a
spec through :func:`resolve`. The registry, :func:`get_backbone`, :func:`resolve`
and :func:`check_available` never import torch (nor timm or open_clip); only
:meth:`BackboneSpec.open` and :meth:`BackboneSpec.load` do. A spec from timm or
OpenCLIP learns its preprocessing (input size, interpolation, crop, mean/std) and
feature dimension from the model's own pretrained config when it is opened.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path

from rshash import RshashError
from rshash.backbones.spec import BackboneSpec, weights_file

__all__ = [
    "BACKBONES",
    "DEFAULT_BACKBONE",
    "ENTRY_KEYS",
    "SOURCES",
    "BackboneSpec",
    "check_available",
    "get_backbone",
    "resolve",
]

DEFAULT_BACKBONE = "efficientnet_lite0"


SOURCES = ("timm", "open_clip")
# the keys of a config entry that define its features (a change reruns extraction)
ENTRY_KEYS = ("timm", "open_clip", "pretrained", "weights", "input_size")


def resolve(name: str, entry: dict | None = None) -> BackboneSpec:
    """The spec of config entry ``name: entry`` (no torch import): ``timm:`` or
    ``open_clip:`` name the library model, else ``name`` is a registered backbone;
    ``pretrained:`` (OpenCLIP only) is a tag of the model, whose weights are in the
    Hugging Face cache; ``weights:`` replaces where the weights come from, ``input_size``
    the model's own input size. RshashError (one line) for an entry that cannot be a
    backbone."""
    entry = entry or {}
    given = {k: entry[k] for k in ENTRY_KEYS if entry.get(k) is not None}
    sources = [k for k in SOURCES if k in given]
    if len(sources) > 1:
        raise RshashError(f"backbone {name!r}: give one of timm: or open_clip:, not both")
    if "pretrained" in given:
        if sources != ["open_clip"]:
            raise RshashError(
                f"backbone {name!r}: `pretrained:` is an OpenCLIP tag and goes with "
                "`open_clip:` (a timm model's tag is part of its name, resnet50.a1_in1k)"
            )
        if "weights" in given:
            raise RshashError(
                f"backbone {name!r}: give `pretrained:` (a tag, its weights from the cache) "
                "or `weights:` (a file), not both"
            )
    if sources == ["timm"]:
        from rshash.backbones import timm_models

        spec = timm_models.spec(name, given["timm"], given.get("weights"), given.get("input_size"))
    elif sources == ["open_clip"]:
        from rshash.backbones import open_clip_models

        spec = open_clip_models.spec(
            name,
            given["open_clip"],
            given.get("weights"),
            given.get("input_size"),
            given.get("pretrained"),
        )
    else:
        spec = get_backbone(name)
        if "weights" in given:
            spec = dataclasses.replace(spec, locate=partial(weights_file, given["weights"]))
        if "input_size" in given:
            spec = dataclasses.replace(spec, input_size=given["input_size"])
    return dataclasses.replace(spec, entry=tuple(sorted(given.items())))


def _registry() -> dict[str, BackboneSpec]:
    from rshash.backbones import efficientnet_lite, torchvision_models

    specs = [*efficientnet_lite.SPECS, *torchvision_models.SPECS]
    return {spec.name: spec for spec in specs}


BACKBONES: dict[str, BackboneSpec] = _registry()


def get_backbone(name: str) -> BackboneSpec:
    """The spec of a registered backbone; RshashError listing valid names otherwise."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise RshashError(
            f"unknown backbone {name!r}; valid names: {', '.join(BACKBONES)}"
        ) from None


def check_available(name: str, entry: dict | None = None) -> Path:
    """The weights file of backbone ``name`` (its config ``entry``); raise the actionable
    RshashError early when absent.

    Only checks that the file exists (no torch import, no hashing).
    """
    return resolve(name, entry).weights_path()
