"""Any timm model as a frozen backbone: ``{timm: NAME}`` in config.yaml.

Weights come from the Hugging Face hub cache timm itself downloads into
(``models--timm--NAME/snapshots/<revision>/model.safetensors``, the revision
``refs/main`` names; :func:`rshash.backbones.spec.hf_hub_cache` honours HF_HOME and
HF_HUB_CACHE), or from a ``weights:`` file (the model's full state dict,
classifier included, as torch.save or safetensors writes it). rshash never
downloads: a model absent from the cache stops the workflow before any job with
the one command that fills the cache. A NAME without a pretrained tag
(``resnet50`` rather than ``resnet50.a1_in1k``) is the one tag of it in the cache.

Preprocessing is the model's own pretrained config (timm.data.resolve_data_config:
input size, interpolation, crop_pct and crop mode, mean/std); ``input_size``
replaces the size (a ViT's position embeddings are resampled to it, crop_pct kept).
Features (through ``forward_intermediates``, which every timm family has):

- pooled: ``forward_head(forward_features(x), pre_logits=True)``, the classifier's input;
- three stages: the last three entries of ``feature_info`` when their strides differ
  (a CNN's strides 8, 16, 32), else blocks at a third, two thirds and the end of the
  depth (a ViT's blocks, patch tokens laid out as a grid, the final norm applied);
- the last maps (DAH): the third stage, average-pooled to at most 7 x 7.
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

from rshash import RshashError
from rshash.backbones.spec import (
    BackboneSpec,
    Preprocess,
    hf_hub_cache,
    hf_repo_folder,
    hf_snapshot_file,
    library_spec,
    not_in_cache,
    weights_file,
)

# the files a timm model's hub repository holds its weights in, in timm's order
WEIGHT_FILES = (
    "model.safetensors",
    "pytorch_model.bin",
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.bin",
)
MAP_GRID = 7


def fetch_command(model: str) -> str:
    return f"python -c \"import timm; timm.create_model('{model}', pretrained=True)\""


def repo_folder(model: str) -> Path:
    """Where huggingface_hub keeps the hub repository timm/<model>."""
    return hf_repo_folder(f"timm/{model}")


def cached_model(model: str) -> tuple[str, Path | None]:
    """(the tagged model name, its weights file in the hub cache or None)."""
    folder = repo_folder(model)
    if "." not in model and not folder.is_dir():
        tagged = sorted(p.name for p in hf_hub_cache().glob(f"models--timm--{model}.*"))
        if len(tagged) > 1:
            names = ", ".join(t.removeprefix("models--timm--") for t in tagged)
            raise RshashError(
                f"timm model {model!r}: several pretrained tags are cached ({names}); "
                "name one in the config entry"
            )
        if tagged:
            model = tagged[0].removeprefix("models--timm--")
            folder = repo_folder(model)
    return model, hf_snapshot_file(folder, WEIGHT_FILES) if folder.is_dir() else None


def _locate(name: str, model: str, weights: str | None) -> Path:
    if weights is not None:
        return weights_file(weights)
    tagged, path = cached_model(model)
    if path is None:
        expected = f"{repo_folder(tagged)}/snapshots/<revision>/{WEIGHT_FILES[0]}"
        raise not_in_cache(name, f"timm model {model!r}", expected, fetch_command(model))
    return path


def spec(name: str, model: str, weights: str | None, input_size: int | None) -> BackboneSpec:
    """The spec of entry ``name: {timm: model}`` (no torch import)."""
    return library_spec(
        name,
        "timm",
        model,
        partial(_locate, name, model, weights),
        input_size=input_size or 0,  # 0: the model's own, known once opened
        map_grid=MAP_GRID,
        opener=partial(_open, name, model, weights, input_size),
    )


def stage_indices(feature_info: list[dict]) -> list[int]:
    """Three feature_info indices of increasing depth (see the module docstring)."""
    n = len(feature_info)
    reductions = [f["reduction"] for f in feature_info]
    if n >= 3 and len(set(reductions[-3:])) == 3:
        return [n - 3, n - 2, n - 1]
    return sorted({max(0, round(n * k / 3) - 1) for k in (1, 2, 3)})


def _open(name: str, model: str, weights: str | None, input_size: int | None, path: Path):
    import timm
    from timm.data import resolve_data_config

    if weights is None:
        model, _ = cached_model(model)
    overlay = {"file": str(path)}
    create = partial(timm.create_model, model, pretrained=True, pretrained_cfg_overlay=overlay)
    try:
        net = None
        if input_size:
            try:  # a ViT's position embeddings are built for (and resampled to) the size
                net = create(img_size=input_size)
            except TypeError:  # a CNN takes any size without being told
                pass
        net = net or create()
    except RuntimeError as exc:
        raise RshashError(
            f"backbone {name!r}: weights {path} do not fit timm model {model!r}: "
            f"{str(exc).splitlines()[0]}"
        ) from None
    except Exception as exc:  # unknown model names etc.
        raise RshashError(f"backbone {name!r}: timm cannot build {model!r}: {exc}") from None
    cfg = resolve_data_config(model=net)
    size = input_size or cfg["input_size"][-1]
    crop_pct = cfg.get("crop_pct") or 0.875
    crop_mode = cfg.get("crop_mode") or "center"
    if crop_mode not in ("center", "squash"):
        raise RshashError(f"backbone {name!r}: timm crop mode {crop_mode!r} is not supported")
    scale = math.floor(size / crop_pct)  # as timm's transforms_imagenet_eval
    info = [dict(f) for f in getattr(net, "feature_info", [])]
    indices = stage_indices(info) if len(info) >= 3 else []

    from rshash.backbones.staged import StagedFeatures

    class TimmFeatures(StagedFeatures):
        """Pooled pre-logits; the stages through forward_intermediates."""

        def pooled(self, x):
            return self.net.forward_head(self.net.forward_features(x), pre_logits=True)

        def staged(self, x):
            if not indices or not hasattr(self.net, "forward_intermediates"):
                raise RshashError(
                    f"backbone {name!r}: timm model {model!r} gives no intermediate stages "
                    "(no forward_intermediates / feature_info): only pooled features"
                )
            final, stages = self.net.forward_intermediates(
                x, indices=indices, norm=True, output_fmt="NCHW"
            )
            return self.net.forward_head(final, pre_logits=True), stages

    done = library_spec(
        name,
        "timm",
        model,
        partial(_locate, name, model, weights),
        input_size=size,
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        feature_dim=int(getattr(net, "head_hidden_size", None) or net.num_features),
        preprocess=Preprocess(size, scale, cfg.get("interpolation", "bicubic"), crop_mode),
        map_grid=MAP_GRID,
    )
    return done, TimmFeatures(net)
