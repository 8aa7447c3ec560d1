"""OpenCLIP backbones named by a pretrained tag (``{open_clip: CONFIG, pretrained: TAG}``),
offline, through the real code of rshash, OpenCLIP and huggingface_hub (nothing mocked).

The weights are random weights of a tiny OpenCLIP ViT, made by OpenCLIP, written where
OpenCLIP's own download of a real tag leaves them in the Hugging Face cache. The tiny
model config is a JSON file named after the tagged model, ``ViT-B-16-SigLIP.json``:
OpenCLIP (open_clip.add_model_config) and rshash register a config file under its stem
and look its tags up by that name, so the real table's real tag (``webli``: its hub
repository, file name and SigLIP preprocessing, squash and mean/std 0.5) applies to the
tiny model unpatched. The file overrides that name's built-in config in the test
process (no other test builds a ViT-B-16-SigLIP)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from rshash import RshashError
from rshash.backbones import check_available, resolve
from rshash.features import extract, read_features

ARCH, TAG = "ViT-B-16-SigLIP", "webli"  # hf_hub timm/ViT-B-16-SigLIP/: the default file
REPO_ID, FILE = "timm/ViT-B-16-SigLIP", "open_clip_model.safetensors"
# a tag whose hf_hub names its file (pytorch_model.bin; OpenCLIP tries .safetensors first)
NAMED = ("ViTamin-S", "datacomp1b", "jienengchen/ViTamin-S", "pytorch_model.bin")
TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 3, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
}
SIZES = [(72, 72), (64, 90), (110, 60), (33, 47)]  # square, portrait, landscape, small


@pytest.fixture(scope="module")
def clip_cache(tmp_path_factory, hf_cache_put):
    """(HF_HOME, the tiny config JSON, the tag's weights file in the cache, the named-file
    tag's file): random weights of the tiny model, created by OpenCLIP, at the tag's
    path in the hub cache; a placeholder at the other tag's (for the lookup alone)."""
    import open_clip
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("open_clip_tags")
    config = root / "configs" / f"{ARCH}.json"
    config.parent.mkdir()
    config.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    state = open_clip.create_model(ARCH).state_dict()
    home = root / "hf_home"
    weights = hf_cache_put(home, REPO_ID, FILE, lambda path: save_file(state, str(path)))
    named = hf_cache_put(home, NAMED[2], NAMED[3], lambda path: path.write_bytes(b"x"))
    return home, config, weights, named


@pytest.fixture
def offline(clip_cache, use_hf_cache):
    use_hf_cache(clip_cache[0])
    return clip_cache


@pytest.fixture(scope="module")
def images(tmp_path_factory, random_images):
    return random_images(tmp_path_factory.mktemp("images"), SIZES)


@pytest.fixture(scope="module")
def open_clips_own(clip_cache, images, tmp_path_factory):
    """What OpenCLIP itself does with the tags, offline, in a fresh process
    (huggingface_hub reads HF_HOME and HF_HUB_OFFLINE once, at import): the file
    download_pretrained resolves each tag to, the preprocess config and the image
    embeddings of create_model_and_transforms(ARCH, pretrained=TAG) on the images."""
    home, config, _, _ = clip_cache
    out = tmp_path_factory.mktemp("open_clip_own")
    paths = list(images[1].path)
    code = f"""
import json, numpy as np, open_clip, torch
from PIL import Image
open_clip.add_model_config({str(config)!r})
files = {{m: open_clip.download_pretrained(open_clip.get_pretrained_cfg(m, t))
         for m, t in [({ARCH!r}, {TAG!r}), ({NAMED[0]!r}, {NAMED[1]!r})]}}
model, _, transform = open_clip.create_model_and_transforms({ARCH!r}, pretrained={TAG!r})
x = torch.stack([transform(Image.open(p)) for p in {paths!r}])
with torch.inference_mode():
    np.save({str(out / "features.npy")!r}, model.eval().encode_image(x).numpy())
pp = open_clip.get_model_preprocess_cfg(model)
json.dump({{"files": files, "preprocess": pp}}, open({str(out / "own.json")!r}, "w"))
"""
    env = os.environ | {"HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        env.pop(key, None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    own = json.loads((out / "own.json").read_text())
    own["features"] = np.load(out / "features.npy")
    return own


def test_the_tag_table_is_open_clips_own():
    """rshash reads open_clip/pretrained.py without importing it: the same table as
    OpenCLIP's get_pretrained_cfg, every (model, tag), quickgelu copies included."""
    import open_clip

    from rshash.backbones.open_clip_models import pretrained_tags

    ours = pretrained_tags()
    assert [(m, t) for m in ours for t in ours[m]] == open_clip.list_pretrained()
    for model, tag in open_clip.list_pretrained():
        assert ours[model][tag] == open_clip.get_pretrained_cfg(model, tag), (model, tag)


def test_a_tag_is_the_file_open_clip_resolves_it_to(offline, open_clips_own):
    """The file rshash finds for a tag is the one OpenCLIP's own (offline) download
    returns: for a repository's default file and for a file the tag names."""
    home, config, weights, named = offline
    for entry in ({"open_clip": ARCH}, {"open_clip": str(config)}):
        assert check_available("c", {**entry, "pretrained": TAG}) == weights
    assert check_available("v", {"open_clip": NAMED[0], "pretrained": NAMED[1]}) == named
    assert open_clips_own["files"] == {ARCH: str(weights), NAMED[0]: str(named)}
    # OpenCLIP's tag names are case- and dash-insensitive
    assert check_available("c", {"open_clip": ARCH, "pretrained": "WEBLI"}) == weights


def test_the_config_check_finds_a_tag_without_torch(offline, repo):
    """The workflow's parse-time work on a tag entry (schema, references, the weights
    lookup) imports neither torch nor open_clip nor huggingface_hub."""
    _, config, weights, _ = offline
    code = f"""
import sys, yaml
from rshash.config import backbone_source, validate
from rshash.backbones import check_available
cfg = yaml.safe_load(open({str(repo / "config.yaml")!r}))
cfg["backbones"]["c"] = {{"open_clip": {ARCH!r}, "pretrained": {TAG!r}, "input_size": 64}}
cfg["backbones"]["j"] = {{"open_clip": {str(config)!r}, "pretrained": {TAG!r}}}
cfg["experiments"]["demo"]["backbones"] += ["c", "j"]
validate(cfg, {str(repo / "workflow/schemas/config.schema.yaml")!r})
assert backbone_source(cfg, "c")["pretrained"] == {TAG!r}  # a new tag: a new extraction
for name in ("c", "j"):
    assert str(check_available(name, cfg["backbones"][name])) == {str(weights)!r}
bad = [m for m in ("torch", "open_clip", "timm", "huggingface_hub") if m in sys.modules]
assert not bad, bad
"""
    subprocess.run([sys.executable, "-c", code], check=True, env=os.environ)


def test_absent_weights_name_the_entry_the_tag_the_path_and_the_command(
    tmp_path, monkeypatch, offline, open_clips_own
):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))
    with pytest.raises(RshashError) as err:
        check_available("clip_b32", {"open_clip": "ViT-B-32", "pretrained": "laion2b_s34b_b79k"})
    message = str(err.value)
    assert "\n" not in message and "'clip_b32'" in message
    assert "'ViT-B-32'" in message and "'laion2b_s34b_b79k'" in message
    folder = tmp_path / "empty" / "hub" / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"
    assert f"{folder}/snapshots/<revision>/open_clip_model.safetensors" in message
    command = (
        'python -c "import open_clip; open_clip.download_pretrained('
        "open_clip.get_pretrained_cfg('ViT-B-32', 'laion2b_s34b_b79k'))\""
    )
    assert message.endswith(command)
    # the command's call, run offline on the tiny tag's cache, returns the file rshash reads
    assert open_clips_own["files"][ARCH] == str(offline[2])

    # the named-file tag: both names, .safetensors first, as OpenCLIP tries them
    expected = "ViTamin-S/snapshots/<revision>/pytorch_model.safetensors (or pytorch_model.bin)"
    with pytest.raises(RshashError, match=re.escape(expected)):
        check_available("v", {"open_clip": "ViTamin-S", "pretrained": "datacomp1b"})


def test_a_hugging_face_text_tower_needs_its_config_in_the_cache(tmp_path, monkeypatch):
    # roberta-ViT-B-32 builds its text tower from roberta-base's config.json, even with a
    # checkpoint file: the check asks for it before a job could reach the network
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"checkpoint")
    entry = {"open_clip": "roberta-ViT-B-32", "weights": str(weights)}
    with pytest.raises(RshashError) as err:
        check_available("rb", entry)
    message = str(err.value)
    folder = tmp_path / "hf" / "hub" / "models--roberta-base"
    assert "\n" not in message and "'roberta-base'" in message
    assert f"{folder}/snapshots/<revision>/config.json" in message
    assert message.endswith("hf_hub_download('roberta-base', 'config.json')\"")
    snapshot = folder / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    assert check_available("rb", entry) == weights


@pytest.mark.parametrize(
    "entry, message",
    [
        (
            {"open_clip": "ViT-B-32", "pretrained": "laion9b"},
            r"'ViT-B-32' has no pretrained tag 'laion9b'; its tags: openai, .*laion2b_s34b_b79k",
        ),
        ({"open_clip": "ViT-B-32", "pretrained": "openai"}, r"QuickGELU.*ViT-B-32-quickgelu"),
        ({"open_clip": "convnext_tiny", "pretrained": "x"}, r"'convnext_tiny' has no pretrained"),
    ],
)
def test_unknown_tags_say_what_is_known(entry, message):
    with pytest.raises(RshashError, match=message) as err:
        check_available("c", entry)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "name, entry, message",
    [
        (
            "bad",
            {"open_clip": "ViT-B-32", "pretrained": "openai", "weights": "w.pt"},
            r"backbones\.bad: backbone 'bad': give `pretrained:` .* or `weights:` .*not both",
        ),
        ("bad", {"timm": "resnet50", "pretrained": "a1_in1k"}, r"`pretrained:` is an OpenCLIP"),
        ("resnet50", {"pretrained": "openai"}, r"backbones\.resnet50: .*`pretrained:` is an Op"),
        ("bad", {"open_clip": "ViT-B-32", "pretrained": ""}, r"backbones\.bad\.pretrained"),
    ],
)
def test_bad_tag_entries_stop_the_config_check(repo, name, entry, message):
    import yaml

    from rshash.config import validate

    cfg = yaml.safe_load((repo / "config.yaml").read_text())
    cfg["backbones"][name] = entry
    with pytest.raises(RshashError, match=message) as err:
        validate(cfg, repo / "workflow/schemas/config.schema.yaml")
    assert "\n" not in str(err.value)


def test_a_tag_gives_open_clips_own_features(offline, images, open_clips_own, tmp_path):
    """Extraction through rshash equals OpenCLIP's own model and transform of the tag
    (create_model_and_transforms(ARCH, pretrained=TAG)): the same file, loaded by
    OpenCLIP, and the tag's preprocessing (SigLIP: squash, mean/std 0.5) on images of
    several aspect ratios; the features file records the tag and the file's sha256."""
    from rshash.digest import file_sha256

    _, config, weights, _ = offline
    source = {"open_clip": str(config), "pretrained": TAG}
    out = tmp_path / "f.h5"
    extract(images[0], "clip", out, source=source, threads=2, progress=False)
    feats = read_features(out)
    np.testing.assert_allclose(feats.features, open_clips_own["features"], atol=1e-4)
    spec, _ = resolve("clip", source).open("cpu")
    pp = open_clips_own["preprocess"]
    assert (pp["resize_mode"], pp["interpolation"]) == ("squash", "bicubic")
    assert spec.preprocess.crop == "squash" and spec.mean == tuple(pp["mean"]) == (0.5,) * 3
    attrs = feats.attrs
    assert attrs["source"] == {
        "library": "open_clip",
        "model": str(config),
        "open_clip": str(config),
        "pretrained": TAG,
    }
    assert attrs["weights_sha256"] == file_sha256(weights)
    assert attrs["versions"]["open_clip_torch"] and attrs["versions"]["huggingface_hub"]
