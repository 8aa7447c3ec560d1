"""Backbones, image loading and the HDF5 feature cache (efficientnet_lite0 on CPU)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from rshash import RshashError
from rshash.backbones import BACKBONES, check_available, get_backbone
from rshash.backbones.torchvision_models import WEIGHTS
from rshash.data.images import load_image
from rshash.data.manifest import write_manifest
from rshash.features import extract, read_features

CLASSES = ["beach", "forest", "river"]
FORMATS = [".png", ".jpg", ".tif", ".tiff"]


def _make_images(root: Path) -> pd.DataFrame:
    """Four images per class in mixed formats and modes; returns the manifest."""
    rng = np.random.default_rng(0)
    rows = []
    for label, cls in enumerate(CLASSES):
        (root / cls).mkdir(parents=True)
        for j, ext in enumerate(FORMATS):
            h, w = (64, 80) if j % 2 else (72, 72)
            base = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            base[..., label] = 200  # some class signal
            img = Image.fromarray(base)
            if (label, j) == (0, 0):
                img = img.convert("L")
            elif (label, j) == (1, 0):
                img = img.convert("RGBA")
            elif (label, j) == (2, 0):
                img = img.convert("P")
            path = root / cls / f"{cls}{j:02d}{ext}"
            img.save(path)
            rows.append((f"{cls}/{path.stem}", str(path), label, cls))
    return pd.DataFrame(rows, columns=["image_id", "path", "label", "class_name"])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("images")
    manifest = _make_images(root / "images")
    path = root / "manifest.parquet"
    write_manifest(manifest, path)
    return path, manifest


@pytest.fixture(scope="module")
def extracted(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("features") / "demo" / "efficientnet_lite0.h5"
    extract(
        dataset[0], "efficientnet_lite0", out, threads=2, batch_size=5, device="cpu", progress=False
    )
    return out


def test_extract_writes_the_contract(dataset, extracted):
    _, manifest = dataset
    feats = read_features(extracted)
    assert feats.features.shape == (len(manifest), 1280)
    assert feats.features.dtype == np.float32
    assert feats.label.dtype == np.int64
    assert list(feats.image_id) == list(manifest.image_id)
    assert list(feats.label) == list(manifest.label)
    assert np.isfinite(feats.features).all()
    assert not np.allclose(feats.features, feats.features[0])
    attrs = feats.attrs
    assert attrs["backbone"] == "efficientnet_lite0"
    assert attrs["weights_sha256"] == get_backbone("efficientnet_lite0").weights_identity()
    assert len(attrs["weights_sha256"]) == 64
    assert attrs["input_size"] == 224
    assert attrs["normalization"] == {"mean": [0.5] * 3, "std": [0.5] * 3}
    assert attrs["device"] == "cpu"
    assert attrs["versions"]["torch"]
    assert attrs["n_images"] == len(manifest)
    assert [p.name for p in extracted.parent.iterdir()] == [extracted.name]


def test_extract_is_deterministic_on_cpu(dataset, extracted, tmp_path):
    again = tmp_path / "again.h5"
    extract(
        dataset[0],
        "efficientnet_lite0",
        again,
        threads=2,
        batch_size=5,
        device="cpu",
        num_workers=1,
        progress=False,
    )
    np.testing.assert_array_equal(read_features(again).features, read_features(extracted).features)


def test_extract_matches_direct_computation(dataset, extracted):
    import torch

    _, manifest = dataset
    spec = get_backbone("efficientnet_lite0")
    model = spec.load("cpu")
    i = 4  # the RGBA image
    x = torch.from_numpy(load_image(manifest.path[i], 224))[None]
    x = (x - 0.5) / 0.5
    with torch.inference_mode():
        expected = model.net.extract_features(x).mean((2, 3))[0].numpy()
    np.testing.assert_allclose(read_features(extracted).features[i], expected, rtol=0, atol=1e-5)


def test_load_image_modes(tmp_path):
    rgb = np.zeros((30, 50, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    cases = {
        "gray.png": Image.fromarray(np.full((30, 50), 128, dtype=np.uint8)),
        "rgba.png": Image.fromarray(np.dstack([rgb, np.zeros((30, 50), np.uint8)])),
        "pal.png": Image.fromarray(rgb).convert("P"),
        "g16.tif": Image.fromarray(np.full((30, 50), 65535, dtype=np.uint16)),
        "rgb.jpg": Image.fromarray(rgb),
    }
    for name, img in cases.items():
        img.save(tmp_path / name)
        x = load_image(tmp_path / name, 16)
        assert x.shape == (3, 16, 16) and x.dtype == np.float32, name
        assert 0.0 <= x.min() and x.max() <= 1.0, name
    np.testing.assert_allclose(load_image(tmp_path / "gray.png", 8), 128 / 255, atol=1e-6)
    np.testing.assert_allclose(load_image(tmp_path / "rgba.png", 8)[0], 1.0)  # alpha dropped
    np.testing.assert_allclose(load_image(tmp_path / "g16.tif", 8), 1.0)


def test_missing_torchvision_weights_fail_before_writing(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    out = tmp_path / "out" / "resnet50.h5"
    for name in ("inception_v3", "resnet50", "vgg16"):
        with pytest.raises(RshashError, match=name) as err:
            check_available(name)
        assert str(tmp_path / "torch_home" / "hub" / "checkpoints") in str(err.value)
        assert "TORCH_HOME" in str(err.value)
    with pytest.raises(RshashError, match="resnet50"):
        extract(dataset[0], "resnet50", out, device="cpu", progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("num_workers", [0, 1])
def test_unreadable_image_names_the_file_and_leaves_nothing(dataset, tmp_path, num_workers):
    _, manifest = dataset
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"")
    bad = pd.concat(
        [
            manifest,
            pd.DataFrame(
                [
                    {
                        "image_id": "river/broken",
                        "path": str(broken),
                        "label": 2,
                        "class_name": "river",
                    }
                ]
            ),
        ]
    )
    bad_path = tmp_path / "bad.parquet"
    write_manifest(bad, bad_path)
    out_dir = tmp_path / "out"
    with pytest.raises(RshashError, match=r"^cannot read image .*broken\.jpg"):
        extract(
            bad_path,
            "efficientnet_lite0",
            out_dir / "f.h5",
            batch_size=4,
            device="cpu",
            num_workers=num_workers,
            progress=False,
        )
    assert not out_dir.exists() or not any(out_dir.iterdir())


def test_unknown_backbone_is_rejected(dataset, tmp_path):
    with pytest.raises(RshashError, match="efficientnet_lite0.*vgg16"):
        get_backbone("resnet18")
    with pytest.raises(RshashError, match="resnet18"):
        extract(dataset[0], "resnet18", tmp_path / "f.h5", progress=False)
    assert not (tmp_path / "f.h5").exists()


def test_registry_names_and_weight_files():
    import torchvision.models as tvm

    assert list(BACKBONES) == [
        "efficientnet_lite0",
        "efficientnet_lite1",
        "efficientnet_lite2",
        "inception_v3",
        "resnet50",
        "vgg16",
    ]
    enums = {
        "inception_v3": tvm.Inception_V3_Weights,
        "resnet50": tvm.ResNet50_Weights,
        "vgg16": tvm.VGG16_Weights,
    }
    for name, entries in WEIGHTS.items():
        for tag, file_name in entries:
            assert enums[name][tag].url.rsplit("/", 1)[1] == file_name


def test_read_features_missing_file(tmp_path):
    with pytest.raises(RshashError, match="nothing.h5"):
        read_features(tmp_path / "nothing.h5")


def test_registry_and_reader_do_not_import_torch():
    code = (
        "import sys, rshash.backbones as b, rshash.features as f; "
        "b.check_available('efficientnet_lite0'); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("kind", ["maps", "layers", "rot"])
def test_feature_kinds_match_direct_computation(dataset, extracted, tmp_path, kind):
    """maps: the last conv maps (their mean is the pooled feature); layers: stages 4, 10
    and the head, pooled; rot: the same for the image turned by 90/180/270 degrees."""
    import torch

    from rshash.features import read_arrays

    path, manifest = dataset
    out = tmp_path / f"efficientnet_lite0_{kind}.h5"
    extract(
        path,
        "efficientnet_lite0",
        out,
        threads=2,
        batch_size=5,
        device="cpu",
        progress=False,
        kind=kind,
    )
    arrays, image_id = read_arrays(out)
    assert list(image_id) == list(manifest.image_id)
    n = len(manifest)
    model = get_backbone("efficientnet_lite0").load("cpu").net
    i = 7
    x = (torch.from_numpy(load_image(manifest.path[i], 224))[None] - 0.5) / 0.5

    def stages(x):
        seen = []
        hooks = [
            model._blocks[b].register_forward_hook(lambda m, a, o: seen.append(o)) for b in (4, 10)
        ]
        with torch.inference_mode():
            head = model.extract_features(x)
        for h in hooks:
            h.remove()
        return [s.mean((2, 3))[0].numpy() for s in seen] + [head.mean((2, 3))[0].numpy()], head

    if kind == "maps":
        assert arrays["maps"].shape == (n, 1280, 7, 7) and arrays["maps"].dtype == np.float16
        _, head = stages(x)
        np.testing.assert_allclose(arrays["maps"][i], head[0].numpy(), rtol=1e-2, atol=1e-2)
        np.testing.assert_allclose(
            arrays["maps"].astype(np.float32).mean((2, 3)),
            read_features(extracted).features,
            atol=2e-3,
        )
    elif kind == "layers":
        expected, _ = stages(x)
        assert [arrays[f"layer{j}"].shape for j in range(3)] == [(n, 40), (n, 112), (n, 1280)]
        for j in range(3):
            np.testing.assert_allclose(arrays[f"layer{j}"][i], expected[j], atol=1e-5)
    else:
        assert arrays["features"].shape == (n, 3, 1280)
        for r, k in enumerate((1, 2, 3)):
            expected, _ = stages(torch.rot90(x, k, dims=(2, 3)))
            np.testing.assert_allclose(arrays["features"][i, r], expected[2], atol=1e-5)
            np.testing.assert_allclose(arrays["layer1"][i, r], expected[1], atol=1e-5)
        # a turned image gives other features (the backbone is not rotation invariant)
        assert not np.allclose(
            arrays["features"][i, 0], read_features(extracted).features[i], atol=1e-3
        )
