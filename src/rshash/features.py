"""The feature cache: frozen-backbone features of every image, in HDF5.

``features/{dataset}/{backbone}.h5`` holds ``features`` float32 [N, D],
``image_id`` (utf-8 strings) and ``label`` int64, in manifest order, with
attributes backbone, weights_sha256, input_size, normalization (JSON),
preprocessing, device, versions (JSON) and n_images. :func:`extract`
imports torch; :func:`read_features` needs only h5py and numpy.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import h5py
import numpy as np

from rshash import RshashError
from rshash.backbones import get_backbone
from rshash.codes import atomic_write
from rshash.data.images import load_image
from rshash.data.manifest import read_manifest
from rshash.provenance import package_versions

if TYPE_CHECKING:
    import torch

JSON_ATTRS = ("normalization", "versions")
PREPROCESSING = "RGB, whole image resized to input_size x input_size (bilinear, no crop), /255"


@dataclass
class Features:
    """A features file in memory."""

    features: np.ndarray  # float32 [N, D]
    image_id: np.ndarray  # str (object) [N]
    label: np.ndarray  # int64 [N]
    attrs: dict

    def __len__(self) -> int:
        return len(self.image_id)


class ManifestImages:
    """Map-style dataset over manifest paths: item i is (image i, error message).

    The image is float32 [3, size, size]; an unreadable one gives zeros and
    the RshashError message, which the main process raises as is (an error
    raised in a DataLoader worker would come back wrapped in its traceback).
    Plain Python (DataLoader accepts any ``__len__``/``__getitem__``), so
    this module stays importable without torch.
    """

    def __init__(self, paths: list[str], size: int):
        self.paths = paths
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[np.ndarray, str]:
        try:
            return load_image(self.paths[i], self.size), ""
        except RshashError as exc:
            return np.zeros((3, self.size, self.size), dtype=np.float32), str(exc)


def extract(
    manifest_path: str | os.PathLike,
    backbone: str,
    out_path: str | os.PathLike,
    threads: int = 1,
    batch_size: int = 32,
    device: str = "auto",
    num_workers: int = 0,
    progress: bool = True,
) -> Path:
    """Write the features of every manifest image to ``out_path`` (atomically).

    ``threads`` is torch's intra-op thread count (a rule's ``threads:``);
    ``device`` is "auto" (CUDA when available), "cpu", "cuda" or "cuda:N";
    ``num_workers`` > 0 decodes images in that many worker processes.
    """
    spec = get_backbone(backbone)
    spec.weights_path()  # the actionable error before any work or file
    manifest = read_manifest(manifest_path)
    missing_cols = {"image_id", "path", "label"} - set(manifest.columns)
    if missing_cols:
        raise RshashError(f"manifest {manifest_path} lacks columns {sorted(missing_cols)}")
    if len(manifest) == 0:
        raise RshashError(f"manifest {manifest_path} has no images")
    paths = [str(p) for p in manifest["path"]]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise RshashError(f"{len(missing)} image(s) of {manifest_path} not found, e.g. "
                          + ", ".join(missing[:3]))

    import torch
    from tqdm import tqdm

    torch.set_num_threads(threads)
    dev = _device(device)
    model = spec.load(dev)
    mean = torch.tensor(spec.mean, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=dev).view(1, 3, 1, 1)
    loader = torch.utils.data.DataLoader(
        ManifestImages(paths, spec.input_size), batch_size=batch_size, shuffle=False,
        num_workers=num_workers, pin_memory=dev.type == "cuda")
    n = len(paths)
    attrs = {
        "backbone": spec.name,
        "weights_sha256": spec.weights_identity(),
        "input_size": spec.input_size,
        "normalization": json.dumps({"mean": list(spec.mean), "std": list(spec.std)}),
        "preprocessing": PREPROCESSING,
        "device": _device_name(dev),
        "versions": json.dumps(package_versions()),
        "n_images": n,
    }

    def write(tmp: str) -> None:
        with h5py.File(tmp, "w") as f, tqdm(total=n, unit="img", file=sys.stderr,
                                            disable=not progress,
                                            desc=f"features {spec.name}") as bar:
            f.attrs.update(attrs)
            f.create_dataset("image_id", data=manifest["image_id"].astype(str).tolist(),
                             dtype=h5py.string_dtype("utf-8"))
            f.create_dataset("label", data=manifest["label"].to_numpy(dtype=np.int64))
            out = f.create_dataset("features", shape=(n, spec.feature_dim), dtype=np.float32)
            start = 0
            with torch.inference_mode():
                for images, errors in loader:
                    if any(errors):
                        raise RshashError(next(e for e in errors if e))
                    x = (images.to(dev, non_blocking=True) - mean) / std
                    batch = model(x).float().cpu().numpy()
                    if batch.shape[1:] != (spec.feature_dim,):
                        raise RshashError(f"backbone {spec.name} returned features of shape "
                                          f"{batch.shape}, expected [N, {spec.feature_dim}]")
                    out[start:start + len(batch)] = batch
                    start += len(batch)
                    bar.update(len(batch))

    atomic_write(out_path, write)
    return Path(out_path)


def _device(device: str) -> "torch.device":
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise RshashError(f"invalid device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RshashError(f"device {device!r} requested but CUDA is not available")
    return dev


def _device_name(dev: "torch.device") -> str:
    import torch

    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    return str(dev)


def read_features(path: str | os.PathLike) -> Features:
    """Load a features file written by :func:`extract` (h5py + numpy only)."""
    path = Path(path)
    if not path.is_file():
        raise RshashError(f"features file not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            features = f["features"][...]
            image_id = np.asarray(f["image_id"].asstr()[...], dtype=object)
            label = f["label"][...].astype(np.int64, copy=False)
            attrs = {k: v.item() if isinstance(v, np.generic) else v for k, v in f.attrs.items()}
    except (OSError, KeyError) as exc:
        raise RshashError(f"{path}: not a readable rshash features file ({exc})") from exc
    for key in JSON_ATTRS:
        if key in attrs:
            attrs[key] = json.loads(attrs[key])
    return Features(features=features, image_id=image_id, label=label, attrs=attrs)
