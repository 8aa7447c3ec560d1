"""Backbones from timm and OpenCLIP, offline, through the real loading code: tiny
models with random weights saved where rshash looks (the Hugging Face cache layout
timm downloads into; an OpenCLIP model-config JSON and a ``weights:`` file)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rshash import RshashError
from rshash.backbones import check_available, resolve
from rshash.backbones.spec import hf_hub_cache
from rshash.features import extract, read_arrays, read_features

TIMM_MODELS = ["test_resnet.r160_in1k", "test_vit.r160_in1k"]  # timm's own test models
SIZES = [(72, 72), (64, 90), (110, 60), (33, 47)]  # square, portrait, landscape, small
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 3, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def images(tmp_path_factory, random_images):
    """Images of several sizes and aspect ratios, and their manifest."""
    return random_images(tmp_path_factory.mktemp("images"), SIZES * 2, class_folders=True)


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory, timm_cache):
    home = tmp_path_factory.mktemp("hf_home")
    for model in TIMM_MODELS:
        timm_cache(home, model)
    return home


@pytest.fixture
def offline(hf_home, use_hf_cache):
    use_hf_cache(hf_home)
    return hf_home


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """(config JSON path, weights file): a tiny OpenCLIP ViT, random weights, full state dict."""
    import open_clip

    root = tmp_path_factory.mktemp("clip")
    config = root / "rshash-tiny-vit.json"
    config.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    model = open_clip.create_model("rshash-tiny-vit")
    torch.save(model.state_dict(), root / "tiny.pt")
    return config, root / "tiny.pt"


def _timm_net(model: str, weights: Path):
    import timm

    return timm.create_model(model, pretrained=True, pretrained_cfg_overlay={"file": str(weights)})


def test_the_cache_layout_is_huggingface_hubs(offline, tmp_path):
    from huggingface_hub import try_to_load_from_cache

    for model in TIMM_MODELS:
        path = check_available("x", {"timm": model})
        assert str(path) == try_to_load_from_cache(
            f"timm/{model}", "model.safetensors", cache_dir=hf_hub_cache()
        )
    # the folder rule is huggingface_hub's own (read in a fresh process: it reads the env once)
    env = os.environ | {"HF_HOME": str(tmp_path / "h")}
    env.pop("HF_HUB_CACHE", None)
    code = "import huggingface_hub.constants as c, rshash.backbones.spec as s; "
    code += "print(c.HF_HUB_CACHE == str(s.hf_hub_cache()))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "True", out.stderr


def test_a_model_name_without_tag_is_the_cached_tag(offline):
    assert check_available("x", {"timm": "test_vit"}) == check_available(
        "x", {"timm": "test_vit.r160_in1k"}
    )


@pytest.mark.parametrize("model", TIMM_MODELS)
def test_timm_preprocessing_is_timms_own_transform(offline, images, model):
    from timm.data import create_transform, resolve_data_config

    weights = check_available("x", {"timm": model})
    spec, _ = resolve("x", {"timm": model}).open("cpu")
    cfg = resolve_data_config(model=_timm_net(model, weights))
    transform = create_transform(**cfg)
    assert spec.input_size == cfg["input_size"][-1]
    assert spec.preprocess.interpolation == cfg["interpolation"]
    assert spec.mean == cfg["mean"] and spec.std == cfg["std"]
    assert spec.preprocess.resize == int(spec.input_size / cfg["crop_pct"])
    mean, std = torch.tensor(spec.mean)[:, None, None], torch.tensor(spec.std)[:, None, None]
    for path in images[1].path:
        ours = (torch.from_numpy(spec.image_loader()(path)) - mean) / std
        theirs = transform(Image.open(path).convert("RGB"))
        assert ours.shape == theirs.shape == (3, spec.input_size, spec.input_size)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_open_clip_preprocessing_is_open_clips_own_transform(images, tiny_clip):
    import open_clip

    config, weights = tiny_clip
    _, _, transform = open_clip.create_model_and_transforms(
        "rshash-tiny-vit", pretrained=str(weights)
    )
    spec, _ = resolve("clip", {"open_clip": str(config), "weights": str(weights)}).open("cpu")
    assert spec.input_size == 64 and spec.preprocess.interpolation == "bicubic"
    assert spec.mean == open_clip.OPENAI_DATASET_MEAN and spec.std == open_clip.OPENAI_DATASET_STD
    mean, std = torch.tensor(spec.mean)[:, None, None], torch.tensor(spec.std)[:, None, None]
    for path in images[1].path:
        ours = (torch.from_numpy(spec.image_loader()(path)) - mean) / std
        theirs = transform(Image.open(path))
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


@pytest.mark.parametrize("model", TIMM_MODELS)
def test_timm_features_of_every_kind(offline, images, tmp_path, model):
    """Pooled: timm's pre-logits of timm's own transform; maps and layers: the stages
    forward_intermediates gives; rot: the pooled features of the turned image."""
    from timm.data import create_transform, resolve_data_config

    path, manifest = images
    n = len(manifest)
    arrays = {}
    for kind in ("features", "maps", "layers", "rot"):
        out = tmp_path / f"{kind}.h5"
        extract(path, "mine", out, source={"timm": model}, kind=kind, threads=2, progress=False)
        arrays[kind], image_id = read_arrays(out)
        assert list(image_id) == list(manifest.image_id)
    attrs = read_features(tmp_path / "features.h5").attrs
    assert attrs["source"] == {"library": "timm", "model": model, "timm": model}
    assert attrs["versions"]["timm"] and attrs["precision"] == "fp32"
    assert attrs["weights_sha256"] == resolve("mine", {"timm": model}).weights_identity()

    net = _timm_net(model, check_available("x", {"timm": model})).eval()
    transform = create_transform(**resolve_data_config(model=net))
    x = torch.stack([transform(Image.open(p).convert("RGB")) for p in manifest.path])
    with torch.inference_mode():
        pooled = net.forward_head(net.forward_features(x), pre_logits=True).numpy()
        turned = net.forward_head(net.forward_features(torch.rot90(x, 1, (2, 3))), True)
    features = arrays["features"]["features"]
    np.testing.assert_allclose(features, pooled, atol=1e-4)
    np.testing.assert_allclose(arrays["rot"]["features"][:, 0], turned.numpy(), atol=1e-4)
    maps = arrays["maps"]["maps"]
    assert maps.dtype == np.float16 and maps.shape[0] == n and max(maps.shape[2:]) <= 7
    layers = [arrays["layers"][f"layer{i}"] for i in range(3)]
    assert all(a.shape[0] == n and a.dtype == np.float32 for a in layers)
    assert [a.shape[1:] for a in layers] == [arrays["rot"][f"layer{i}"].shape[2:] for i in range(3)]
    assert maps.shape[1] == layers[2].shape[1]


def test_timm_input_size_resamples_a_vit(offline, images, tmp_path):
    out = tmp_path / "f.h5"
    source = {"timm": "test_vit.r160_in1k", "input_size": 64}
    extract(images[0], "small", out, source=source, kind="maps", threads=2, progress=False)
    arrays, _ = read_arrays(out)
    assert arrays["maps"].shape[2:] == (4, 4)  # 64 px / 16 px patches, under the 7 x 7 cap
    assert read_features_attrs(out)["input_size"] == 64


def read_features_attrs(path):
    import h5py

    with h5py.File(path) as f:
        return dict(f.attrs)


def test_open_clip_features_of_every_kind(images, tiny_clip, tmp_path):
    import open_clip

    config, weights = tiny_clip
    source = {"open_clip": str(config), "weights": str(weights)}
    path, manifest = images
    arrays = {}
    for kind in ("features", "maps", "layers", "rot"):
        extract(path, "clip", tmp_path / f"{kind}.h5", source=source, kind=kind, progress=False)
        arrays[kind], _ = read_arrays(tmp_path / f"{kind}.h5")
    model, _, transform = open_clip.create_model_and_transforms(
        "rshash-tiny-vit", pretrained=str(weights)
    )
    x = torch.stack([transform(Image.open(p)) for p in manifest.path])
    with torch.inference_mode():
        expected = model.eval().encode_image(x).numpy()
    np.testing.assert_allclose(arrays["features"]["features"], expected, atol=1e-4)
    assert arrays["maps"]["maps"].shape == (len(manifest), 64, 4, 4)
    assert [arrays["layers"][f"layer{i}"].shape[1] for i in range(3)] == [64, 64, 64]
    assert arrays["rot"]["features"].shape == (len(manifest), 3, 32)


def test_missing_timm_weights_name_the_model_the_path_and_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    with pytest.raises(RshashError) as err:
        check_available("dino", {"timm": "vit_base_patch14_dinov2.lvd142m"})
    message = str(err.value)
    assert "\n" not in message and "'dino'" in message
    assert str(tmp_path / "empty" / "hub" / "models--timm--vit_base_patch14_dinov2.lvd142m") in (
        message
    )
    assert "timm.create_model('vit_base_patch14_dinov2.lvd142m', pretrained=True)" in message
    with pytest.raises(RshashError, match="does not exist"):
        check_available("r", {"timm": "resnet50.a1_in1k", "weights": str(tmp_path / "no.pt")})
    with pytest.raises(RshashError, match="needs `pretrained:`, a tag .* or `weights:`"):
        check_available("c", {"open_clip": "ViT-B-32"})


def test_a_weights_file_is_the_full_state_dict(images, tmp_path, offline):
    """A timm model's `weights:` file (torch.save of the state dict) gives the same
    features as the same weights in the hub cache."""
    from safetensors.torch import load_file

    model = "test_resnet.r160_in1k"
    state = load_file(str(check_available("x", {"timm": model})))
    torch.save(state, tmp_path / "w.pt")
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    extract(images[0], "x", a, source={"timm": model}, progress=False)
    extract(images[0], "x", b, source={"timm": model, "weights": str(tmp_path / "w.pt")})
    np.testing.assert_array_equal(read_features(a).features, read_features(b).features)


def test_efficientnet_lite1_is_bundled(images, tmp_path):
    out = tmp_path / "lite1.h5"
    extract(images[0], "efficientnet_lite1", out, kind="layers", threads=2, progress=False)
    arrays, _ = read_arrays(out)
    assert [arrays[f"layer{i}"].shape[1] for i in range(3)] == [40, 112, 1280]
    assert read_features_attrs(out)["input_size"] == 240


def test_config_check_and_weights_check_import_no_torch(offline, repo):
    """The workflow's parse-time work on timm and OpenCLIP entries imports neither torch
    nor timm nor open_clip."""
    code = f"""
import sys, yaml
from rshash.config import validate
from rshash.backbones import check_available
cfg = yaml.safe_load(open({str(repo / "config.yaml")!r}))
cfg["backbones"]["t"] = {{"timm": "test_vit.r160_in1k", "input_size": 64}}
cfg["backbones"]["c"] = {{"open_clip": "ViT-B-32", "weights": "w.pt"}}
cfg["experiments"]["demo"]["backbones"] += ["t", "c"]
validate(cfg, {str(repo / "workflow/schemas/config.schema.yaml")!r})
check_available("t", cfg["backbones"]["t"])
bad = [m for m in ("torch", "timm", "open_clip") if m in sys.modules]
assert not bad, bad
"""
    subprocess.run([sys.executable, "-c", code], check=True, env=os.environ)


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"timm": "a", "open_clip": "b"}, r"backbones\.bad"),
        ({"batch_size": 4}, r"backbones: 'bad' is not a registered backbone.*timm: MODEL"),
        ({"timm": "a", "precision": "fp8"}, r"backbones\.bad\.precision"),
    ],
)
def test_bad_backbone_entries_stop_the_config_check(repo, entry, message):
    import yaml

    from rshash.config import validate

    cfg = yaml.safe_load((repo / "config.yaml").read_text())
    cfg["backbones"]["bad"] = entry
    with pytest.raises(RshashError, match=message):
        validate(cfg, repo / "workflow/schemas/config.schema.yaml")
