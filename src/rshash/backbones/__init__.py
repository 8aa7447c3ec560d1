"""Frozen CNN backbones, registered by name.

Each entry is a :class:`BackboneSpec`: input size, normalization, feature
dimension, where its weights file lives and how to build the pooled-feature
module from it. The registry, :func:`get_backbone` and
:func:`check_available` never import torch; only :meth:`BackboneSpec.load`
does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from rshash import RshashError

if TYPE_CHECKING:
    import torch

DEFAULT_BACKBONE = "efficientnet_lite0"


@dataclass(frozen=True)
class BackboneSpec:
    """A frozen backbone: preprocessing, output size, weights and loader.

    ``locate()`` returns the weights file or raises an RshashError that says
    how to supply it; ``loader(weights_path)`` builds a torch module whose
    forward maps normalized [N, 3, input_size, input_size] images to pooled
    float features [N, feature_dim].
    """

    name: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    feature_dim: int
    locate: Callable[[], Path]
    loader: Callable[[Path], torch.nn.Module]
    # modules (dotted names in the loaded module) whose outputs are three stages
    # of increasing depth (strides 8, 16, 32, as ResNet's layer2-4); the last is
    # the last conv maps (DAH's input). PBFFN fuses the three stages, pooled.
    stages: tuple[str, str, str] = ()

    def weights_path(self) -> Path:
        """The weights file; RshashError naming it and the remedy when absent."""
        return self.locate()

    def weights_identity(self) -> str:
        """sha256 hex digest of the weights file (hashed once per process)."""
        path = self.weights_path()
        stat = path.stat()
        return _sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)

    def load(self, device: str | torch.device = "cpu") -> torch.nn.Module:
        """The backbone on ``device``, in eval mode, with gradients off."""
        module = self.loader(self.weights_path())
        module.eval()
        module.requires_grad_(False)
        return module.to(device)


@cache
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """file_sha256, cached per (path, size, mtime)."""
    from rshash.data.fetch import file_sha256  # here: fetch imports http.client (20 ms)

    return file_sha256(Path(path))


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


def check_available(name: str) -> Path:
    """The weights file of ``name``; raise the actionable RshashError early when absent.

    Only checks that the file exists (no torch import, no hashing).
    """
    return get_backbone(name).weights_path()
