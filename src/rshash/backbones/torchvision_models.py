"""torchvision ImageNet backbones: inception_v3, resnet50, vgg16.

Weights are read from the torch hub download cache,
``torch.hub.get_dir()/checkpoints/<file>`` (``$TORCH_HOME/hub/checkpoints``),
never downloaded here: rshash runs offline. Input: RGB in [0, 1]
normalized with the ImageNet mean/std.

Features:

- ``inception_v3`` (IMAGENET1K_V1, 299): the 2048-d global average pool
  before ``fc``. ``transform_input=True`` as torchvision sets it for these
  weights (they were trained on [-1, 1] inputs; the model converts
  ImageNet-normalized inputs itself).
- ``resnet50`` (IMAGENET1K_V2, else IMAGENET1K_V1, 224): the 2048-d global
  average pool before ``fc``.
- ``vgg16`` (IMAGENET1K_V1, 224): the 4096-d fc7 activation after its ReLU
  (the classifier minus its last Linear; dropout is off in eval mode).
"""

from __future__ import annotations

import os
import sys
from functools import partial
from pathlib import Path

from rshash import RshashError
from rshash.backbones.spec import BackboneSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Weights file names, as in the torchvision weights enums' URLs (tests check
# they still match), so availability can be checked without importing torch.
WEIGHTS = {
    "inception_v3": [("IMAGENET1K_V1", "inception_v3_google-0cc3c7bd.pth")],
    "resnet50": [
        ("IMAGENET1K_V2", "resnet50-11ad3fa6.pth"),
        ("IMAGENET1K_V1", "resnet50-0676ba61.pth"),
    ],
    "vgg16": [("IMAGENET1K_V1", "vgg16-397923af.pth")],
}


def hub_checkpoints_dir() -> Path:
    """``torch.hub.get_dir()/checkpoints``, computed without importing torch when possible."""
    if "torch" in sys.modules:  # honours torch.hub.set_dir()
        return Path(sys.modules["torch"].hub.get_dir()) / "checkpoints"
    cache = os.getenv("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    torch_home = os.path.expanduser(os.getenv("TORCH_HOME", os.path.join(cache, "torch")))
    return Path(torch_home) / "hub" / "checkpoints"


def _locate(name: str) -> Path:
    folder = hub_checkpoints_dir()
    for _, file_name in WEIGHTS[name]:
        if (folder / file_name).is_file():
            return folder / file_name
    tag, file_name = WEIGHTS[name][0]
    raise RshashError(
        f"backbone {name!r} needs the torchvision weights {tag}, expected at "
        f"{folder / file_name}, which does not exist (rshash never downloads). Either run once "
        f'with internet access: python -c "import torchvision; '
        f"torchvision.models.{name}(weights='{tag}')\", or copy the file there from "
        f"another machine; set TORCH_HOME to use another cache folder "
        f"(now {folder.parent.parent}). The efficientnet_lite0 and efficientnet_lite2 "
        f"backbones work offline."
    )


def _load(name: str, weights_path: Path):
    import torch
    import torchvision

    if name == "inception_v3":
        model = torchvision.models.inception_v3(
            weights=None, aux_logits=True, transform_input=True, init_weights=False
        )
    else:
        model = getattr(torchvision.models, name)(weights=None)
    state = torch.load(weights_path, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    if name == "vgg16":
        model.classifier = model.classifier[:-1]
    else:
        model.fc = torch.nn.Identity()
    return model


def _spec(
    name: str, input_size: int, feature_dim: int, stages: tuple[str, str, str]
) -> BackboneSpec:
    return BackboneSpec(
        name=name,
        input_size=input_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        feature_dim=feature_dim,
        locate=partial(_locate, name),
        loader=partial(_load, name),
        stages=stages,
    )


SPECS = [
    _spec("inception_v3", 299, 2048, ("Mixed_5d", "Mixed_6e", "Mixed_7c")),
    _spec("resnet50", 224, 2048, ("layer2", "layer3", "layer4")),
    _spec("vgg16", 224, 4096, ("features.16", "features.23", "features.30")),  # pool3-5
]
