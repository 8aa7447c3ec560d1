"""An OpenCLIP image tower as a frozen backbone: ``{open_clip: CONFIG, weights: FILE}``.

CONFIG is an OpenCLIP model config name (``ViT-B-32``, ``RN50``, ...; the JSON
files of open_clip/model_configs) or the path of a model-config JSON file of one's
own (registered with ``open_clip.add_model_config`` before the model is built).
FILE is the model's full state dict (the CLIP checkpoint, text tower included, as
torch.save or safetensors writes it, e.g. RemoteCLIP-ViT-B-32.pt or a GeoRSCLIP
checkpoint). Needs the optional extra ``pip install 'rshash[open_clip]'``.

Preprocessing is the model's own (open_clip.get_model_preprocess_cfg: size,
interpolation, resize mode, mean/std; OpenCLIP's eval transform resizes the
shortest side to the size and crops the centre). Features, through the tower's
``forward_intermediates``:

- pooled: the image embedding (``encode_image``, projected, not L2-normalized);
- three stages: blocks at a third, two thirds and the end of the tower (a ViT's
  patch tokens as a grid, the final norm applied; a ResNet's or timm tower's stages);
- the last maps (DAH): the third stage, average-pooled to at most 7 x 7.
"""

from __future__ import annotations

import importlib.util
import inspect
from functools import partial
from pathlib import Path

from rshash import RshashError
from rshash.backbones import BackboneSpec, Preprocess, weights_file

MAP_GRID = 7
EXTRA = "pip install 'rshash[open_clip]'"


def _locate(name: str, config: str, weights: str | None) -> Path:
    if importlib.util.find_spec("open_clip") is None:  # finds, does not import
        raise RshashError(
            f"backbone {name!r} needs OpenCLIP (open_clip_torch), which is not installed: {EXTRA}"
        )
    if config.endswith(".json") and not Path(config).is_file():
        raise RshashError(f"backbone {name!r}: OpenCLIP model config {config} does not exist")
    if weights is None:
        raise RshashError(
            f"backbone {name!r}: an OpenCLIP entry needs `weights:`, the checkpoint file "
            f"(rshash never downloads); fetch one on a machine with internet, e.g. "
            f"python -c \"import open_clip; open_clip.create_model('{config}', "
            f"pretrained='openai', cache_dir='weights')\" and name the .bin/.safetensors "
            "file it writes"
        )
    return weights_file(weights)


def spec(name: str, config: str, weights: str | None, input_size: int | None) -> BackboneSpec:
    """The spec of entry ``name: {open_clip: config, weights: ...}`` (no torch import)."""
    return BackboneSpec(
        name=name,
        input_size=input_size or 0,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        feature_dim=0,
        locate=partial(_locate, name, config, weights),
        loader=_no_loader,
        stages=("stage0", "stage1", "stage2"),
        source="open_clip",
        model=config,
        map_grid=MAP_GRID,
        opener=partial(_open, name, config, input_size),
    )


def _no_loader(_path):
    raise AssertionError("OpenCLIP backbones are built by BackboneSpec.open")


def model_name(config: str) -> str:
    """The registered name of a config (a JSON file's stem), registering the file."""
    if not config.endswith(".json"):
        return config
    import open_clip

    open_clip.add_model_config(config)
    return Path(config).stem


def _open(name: str, config: str, input_size: int | None, path: Path):
    import open_clip

    arch = model_name(config)
    try:
        clip = open_clip.create_model(
            arch, pretrained=str(path), force_image_size=input_size, device="cpu"
        )
    except RuntimeError as exc:
        raise RshashError(
            f"backbone {name!r}: weights {path} do not fit OpenCLIP model {arch!r}: "
            f"{str(exc).splitlines()[0]}"
        ) from None
    pp = open_clip.get_model_preprocess_cfg(clip)
    size = pp["size"] if isinstance(pp["size"], int) else pp["size"][-1]
    mode = pp.get("resize_mode", "shortest")
    if mode not in ("shortest", "squash"):
        raise RshashError(f"backbone {name!r}: OpenCLIP resize mode {mode!r} is not supported")
    visual = clip.visual
    depth = _depth(visual)
    indices = sorted({max(0, round(depth * k / 3) - 1) for k in (1, 2, 3)})
    options = {"indices": indices, "output_fmt": "NCHW"}
    if "normalize_intermediates" in inspect.signature(visual.forward_intermediates).parameters:
        options["normalize_intermediates"] = True

    from rshash.backbones.staged import StagedFeatures

    class OpenClipFeatures(StagedFeatures):
        """The image embedding; the stages through forward_intermediates."""

        def pooled(self, x):
            return self.net(x)

        def staged(self, x):
            out = self.net.forward_intermediates(x, **options)
            return out["image_features"], out["image_intermediates"]

    done = BackboneSpec(
        name=name,
        input_size=size,
        mean=tuple(float(v) for v in pp["mean"]),
        std=tuple(float(v) for v in pp["std"]),
        feature_dim=int(getattr(visual, "output_dim", 0)),
        locate=lambda: path,
        loader=_no_loader,
        stages=("stage0", "stage1", "stage2"),
        source="open_clip",
        model=config,
        preprocess=Preprocess(
            size,
            size,
            pp.get("interpolation", "bicubic"),
            "squash" if mode == "squash" else "center",
        ),
        map_grid=MAP_GRID,
    )
    return done, OpenClipFeatures(visual)


def _depth(visual) -> int:
    """How many blocks (or stages) the tower's forward_intermediates indexes."""
    if hasattr(visual, "transformer"):
        return len(visual.transformer.resblocks)
    if hasattr(visual, "layer4"):  # ModifiedResNet: stem + 4 layers
        return 5
    info = getattr(getattr(visual, "trunk", None), "feature_info", None)
    return len(info) if info else 3
