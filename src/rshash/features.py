"""The feature cache: frozen-backbone features of every image, in HDF5.

``features/{dataset}/{backbone}.h5`` holds ``features`` float32 [N, D],
``image_id`` (utf-8 strings) and ``label`` int64, in manifest order, with
attributes backbone, weights_sha256, input_size, normalization (JSON),
preprocessing, device, versions (JSON), n_images, kind, stages (JSON), and for a
backbone from a config entry's source (timm, OpenCLIP) source (JSON: the library,
model and entry keys) and precision. :func:`extract`
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
from rshash.backbones import resolve
from rshash.backbones.spec import Preprocess
from rshash.codes import ROTATIONS
from rshash.data.manifest import read_manifest
from rshash.digest import HDF5_USERBLOCK, prepare_hdf5, verify, write_sealed
from rshash.provenance import package_versions

if TYPE_CHECKING:
    import torch

JSON_ATTRS = ("normalization", "versions", "source")
PRECISIONS = ("fp32", "bf16", "fp16")
PREPROCESSING = "RGB, whole image resized to input_size x input_size (bilinear, no crop), /255"


@dataclass
class Features:
    """A features file in memory."""

    features: np.ndarray  # float32 [N, D]
    image_id: np.ndarray  # str (object) [N]
    label: np.ndarray  # int64 [N]
    attrs: dict
    sha256: str = ""  # the file's content digest (rshash.digest), checked when read

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

    def __init__(self, paths: list[str], load: Preprocess | int):
        self.paths = paths
        self.load = Preprocess(load) if isinstance(load, int) else load
        self.size = self.load.size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[np.ndarray, str]:
        try:
            return self.load(self.paths[i]), ""
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
    kind: str = "features",
    input_size: int | None = None,
    prefetch: int = 2,
    source: dict | None = None,
    precision: str = "fp32",
) -> Path:
    """Write one kind of backbone output for every manifest image to ``out_path``
    (atomically), in manifest order.

    ``kind``: ``features`` (pooled, float32 [N, D]); ``maps`` (the last conv
    maps, float16 [N, C, h, w]); ``layers`` (``layer0..2``: the three stages
    of the backbone's ``stages``, each averaged over space, float32 [N, C_i]);
    ``rot`` (``features`` [N, 3, D] and ``layer0..2`` [N, 3, C_i] of the image
    rotated by 90, 180 and 270 degrees). ``threads`` is torch's intra-op
    thread count (a rule's ``threads:``); ``device`` is "auto" (CUDA when
    available), "cpu", "cuda" or "cuda:N"; ``num_workers`` > 0 decodes
    images in that many worker processes. ``input_size`` replaces the
    backbone's (benchmarks; it is recorded in the file's attributes).
    ``source``: the backbone's config entry (``timm:``, ``open_clip:``, ``pretrained:``,
    ``weights:``, ``input_size``; rshash.backbones.resolve); None or {} for a registered
    name.
    ``precision``: fp32 (the default), or bf16 / fp16 autocast of the forward pass
    (features are stored as float32 all the same; recorded in the attributes). On
    CUDA, images are decoded in at least ``threads - 1`` worker processes into
    pinned memory, so the GPU is not kept waiting by one decoding process.

    Memory does not grow with the dataset: the torch DataLoader keeps at most
    ``prefetch`` batches per worker in flight (a bounded queue), and each
    batch is written into pre-sized HDF5 datasets as it comes, never kept.
    """
    if kind not in KINDS:
        raise RshashError(f"unknown feature kind {kind!r}; known: {', '.join(KINDS)}")
    if precision not in PRECISIONS:
        raise RshashError(f"unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    entry = dict(source or {})
    if input_size:
        entry["input_size"] = input_size
    spec = resolve(backbone, entry)
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
        raise RshashError(
            f"{len(missing)} image(s) of {manifest_path} not found, e.g. " + ", ".join(missing[:3])
        )

    import torch
    from tqdm import tqdm

    dev, spec, normalize, outputs = _backbone_on(spec, device, threads, kind)
    size = spec.input_size
    if dev.type == "cuda":
        num_workers = max(num_workers, threads - 1)
    loader = torch.utils.data.DataLoader(
        ManifestImages(paths, spec.image_loader()),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=dev.type == "cuda",
        prefetch_factor=prefetch if num_workers > 0 else None,
    )
    n = len(paths)
    attrs = {
        "backbone": spec.name,
        "weights_sha256": spec.weights_identity(),
        "input_size": size,
        "normalization": json.dumps({"mean": list(spec.mean), "std": list(spec.std)}),
        "preprocessing": PREPROCESSING if spec.preprocess is None else spec.preprocess.describe(),
        "device": _device_name(dev),
        "versions": json.dumps(_versions(spec.source)),
        "n_images": n,
        "kind": kind,
        "stages": json.dumps(list(spec.stages)),
    }
    if spec.source != "bundled" or spec.entry or precision != "fp32":
        attrs["source"] = json.dumps(
            {"library": spec.source, "model": spec.model or spec.name, **dict(spec.entry)}
        )
        attrs["precision"] = precision

    def write(tmp: str) -> None:
        with (
            h5py.File(tmp, "w", userblock_size=HDF5_USERBLOCK) as f,
            tqdm(
                total=n,
                unit="img",
                file=sys.stderr,
                disable=not progress,
                desc=f"features {spec.name}",
            ) as bar,
        ):
            f.attrs.update(attrs)
            f.create_dataset(
                "image_id",
                data=manifest["image_id"].astype(str).tolist(),
                dtype=h5py.string_dtype("utf-8"),
            )
            f.create_dataset("label", data=manifest["label"].to_numpy(dtype=np.int64))
            datasets = {}
            start = 0
            with torch.inference_mode():
                for images, errors in loader:
                    if any(errors):
                        raise RshashError(next(e for e in errors if e))
                    with _autocast(dev, precision):
                        batches = outputs(normalize(images))
                    for name, batch in batches.items():
                        if name not in datasets:  # chunks of about 1 MiB of whole rows
                            rows = max(1, (1 << 20) // max(1, batch[0].nbytes))
                            datasets[name] = f.create_dataset(
                                name,
                                shape=(n, *batch.shape[1:]),
                                dtype=batch.dtype,
                                chunks=(min(n, rows), *batch.shape[1:]),
                            )
                        datasets[name][start : start + len(batch)] = batch
                    start += len(images)
                    bar.update(len(images))
        prepare_hdf5(tmp)

    write_sealed(out_path, write)
    return Path(out_path)


KINDS = ("features", "maps", "layers", "rot")


LIBRARIES = {
    "timm": ("timm", "huggingface_hub", "safetensors"),
    "open_clip": ("open_clip_torch", "huggingface_hub", "safetensors"),
}


def _versions(source: str) -> dict:
    """rshash's package versions, and those of the backbone's library (timm, OpenCLIP)."""
    from importlib import metadata

    versions = package_versions()
    for name in LIBRARIES.get(source, ()):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _autocast(dev, precision: str):
    """bf16 / fp16 autocast of the forward pass on ``dev``; fp32: no context at all."""
    import contextlib

    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(dev.type, dtype=dtype)


def _backbone_on(spec, device: str, threads: int, kind: str):
    """The backbone loaded on its device, torch's thread count set: (the device,
    the complete spec (a timm or OpenCLIP model's preprocessing is known once it is
    loaded), a function moving an image batch there and normalizing it as the
    backbone expects, the ``kind`` outputs of the network). Shared by extract and
    embed so both preprocess identically."""
    import torch

    torch.set_num_threads(threads)
    dev = _device(device)
    spec, model = spec.open(dev)
    mean = torch.tensor(spec.mean, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=dev).view(1, 3, 1, 1)

    def normalize(images):
        return (images.to(dev, non_blocking=True) - mean) / std

    return dev, spec, normalize, _Outputs(model, spec, kind)


class _Outputs:
    """What one batch gives for a kind of features file: name -> numpy array."""

    def __init__(self, model, spec, kind: str):
        self.model, self.spec, self.kind = model, spec, kind
        self.captured: dict[int, torch.Tensor] = {}
        if kind != "features":
            if hasattr(model, "capture_stages"):  # timm / OpenCLIP: run forward_intermediates
                model.capture_stages = True
            modules = dict(model.named_modules())
            wanted = spec.stages[2:] if kind == "maps" else spec.stages
            for i, name in enumerate(wanted):
                modules[name].register_forward_hook(
                    lambda _m, _in, out, i=i: self.captured.__setitem__(i, out)
                )

    def _pooled(self, x) -> tuple:
        self.captured.clear()
        pooled = self.model(x).float()
        if pooled.shape[1:] != (self.spec.feature_dim,):
            raise RshashError(
                f"backbone {self.spec.name} returned features of shape "
                f"{tuple(pooled.shape)}, expected [N, {self.spec.feature_dim}]"
            )
        return pooled, dict(self.captured)

    def __call__(self, x) -> dict[str, np.ndarray]:
        import torch

        if self.kind == "rot":
            views = [self._pooled(torch.rot90(x, d // 90, dims=(2, 3))) for d in ROTATIONS]
            out = {"features": torch.stack([p for p, _ in views], 1)}
            for i in range(3):
                out[f"layer{i}"] = torch.stack([c[i].float().mean((2, 3)) for _, c in views], 1)
            return {k: v.cpu().numpy() for k, v in out.items()}
        pooled, captured = self._pooled(x)
        if self.kind == "features":
            return {"features": pooled.cpu().numpy()}
        if self.kind == "maps":
            maps = captured[0]
            grid = self.spec.map_grid
            if grid and max(maps.shape[2:]) > grid:  # a bounded file for any backbone
                size = (min(grid, maps.shape[2]), min(grid, maps.shape[3]))
                maps = torch.nn.functional.adaptive_avg_pool2d(maps.float(), size)
            return {"maps": maps.half().cpu().numpy()}
        return {f"layer{i}": captured[i].float().mean((2, 3)).cpu().numpy() for i in range(3)}


def read_arrays(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every array of a features file of any kind (name -> array) and its image ids."""
    path = Path(path)
    verify(path, "features file")
    try:
        with h5py.File(path, "r") as f:
            image_id = np.asarray(f["image_id"].asstr()[...], dtype=object)
            arrays = {k: f[k][...] for k in f.keys() if k not in ("image_id", "label")}
    except (OSError, KeyError, ValueError) as exc:
        raise RshashError(f"{path}: not a readable rshash features file ({exc})") from None
    for name, values in arrays.items():
        check_finite(path, name, values, image_id)
    return arrays, image_id


def write_arrays(
    path: str | os.PathLike,
    image_id,
    label,
    arrays: dict[str, np.ndarray],
    attrs: dict | None = None,
) -> None:
    """Write a features file of any kind from arrays in memory (atomically, sealed):
    the small-data counterpart of :func:`extract`, same layout."""

    def write(tmp):
        with h5py.File(tmp, "w", userblock_size=HDF5_USERBLOCK) as f:
            f.attrs.update(attrs or {})
            f.create_dataset(
                "image_id", data=[str(i) for i in image_id], dtype=h5py.string_dtype("utf-8")
            )
            f.create_dataset("label", data=np.asarray(label, dtype=np.int64))
            for name, value in arrays.items():
                f.create_dataset(name, data=value)
        prepare_hdf5(tmp)

    write_sealed(path, write)


def check_finite(path, name: str, values: np.ndarray, image_id: np.ndarray) -> None:
    """Refuse NaN or infinite features, naming the file and the first bad row."""
    bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    if bad.any():
        row = int(np.argmax(bad))
        raise RshashError(
            f"{path}: non-finite values in '{name}' ({int(bad.sum())} row(s), "
            f"the first row {row}, image {image_id[row]})"
        )


def _device(device: str) -> torch.device:
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


def _device_name(dev: torch.device) -> str:
    import torch

    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    return str(dev)


def read_features(path: str | os.PathLike) -> Features:
    """Load a features file written by :func:`extract` (h5py + numpy only)."""
    path = Path(path)
    digest = verify(path, "features file")
    try:
        with h5py.File(path, "r") as f:
            features = f["features"][...]
            image_id = np.asarray(f["image_id"].asstr()[...], dtype=object)
            label = f["label"][...].astype(np.int64, copy=False)
            attrs = {k: v.item() if isinstance(v, np.generic) else v for k, v in f.attrs.items()}
        for key in JSON_ATTRS:
            if key in attrs:
                attrs[key] = json.loads(attrs[key])
    except (OSError, KeyError, ValueError) as exc:
        raise RshashError(f"{path}: not a readable rshash features file ({exc})") from None
    if features.ndim != 2 or len(features) != len(image_id) or len(label) != len(image_id):
        raise RshashError(
            f"{path}: features {features.shape}, {len(image_id)} image ids and "
            f"{len(label)} labels do not match"
        )
    check_finite(path, "features", features, image_id)
    return Features(features=features, image_id=image_id, label=label, attrs=attrs, sha256=digest)


def embed(
    paths: list[str],
    backbone: str,
    threads: int = 1,
    batch_size: int = 32,
    device: str = "cpu",
    source: dict | None = None,
) -> np.ndarray:
    """Pooled features float32 [N, D] of image files, preprocessed exactly as
    :func:`extract` does (for encoding images outside any manifest).

    Images are decoded a batch at a time; an unreadable one raises the
    RshashError naming it. Imports torch.
    """
    return embedder(backbone, threads, batch_size, device, source)(paths)


def embedder(
    backbone: str,
    threads: int = 1,
    batch_size: int = 32,
    device: str = "cpu",
    source: dict | None = None,
):
    """:func:`embed` with the backbone loaded once: a function ``paths -> features``
    (``rshash serve`` encodes one uploaded query at a time, and loading the network
    costs far more than one image). Imports torch."""
    spec = resolve(backbone, source)
    spec.weights_path()
    import torch

    _, spec, normalize, outputs = _backbone_on(spec, device, threads, "features")
    load = spec.image_loader()

    def forward(batch: np.ndarray) -> np.ndarray:
        """Pooled features of one preprocessed batch, float32 [B, 3, size, size]."""
        with torch.inference_mode():
            return outputs(normalize(torch.from_numpy(batch)))["features"]

    def run(paths: list[str]) -> np.ndarray:
        parts = []
        for start in range(0, len(paths), batch_size):
            parts.append(forward(np.stack([load(p) for p in paths[start : start + batch_size]])))
        if not parts:
            return np.zeros((0, spec.feature_dim), dtype=np.float32)
        return np.concatenate(parts)

    # the steps apart, for a caller that prepares batches while the network runs
    run.load, run.forward = load, forward
    return run
