"""What a backbone is (:class:`BackboneSpec`, :class:`Preprocess`) and where its
weights are found (a file, the Hugging Face cache); no torch import. The bundled
backbones and the timm / OpenCLIP sources build their specs from these, and
:mod:`rshash.backbones` resolves a config entry to one."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from rshash import RshashError

if TYPE_CHECKING:
    import torch


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
    # where the spec comes from: "bundled" (a registered name), "timm" or "open_clip"
    source: str = "bundled"
    # the library's model name (timm: with its pretrained tag; open_clip: its config)
    model: str = ""
    # how an image file becomes float32 [3, input_size, input_size] in [0, 1]
    preprocess: Preprocess | None = None
    # the last maps (DAH's input) are average-pooled to at most map_grid x map_grid
    # (a ViT-L/14 at 518 px has 37 x 37 patch tokens); None: stored as they come
    map_grid: int | None = None
    # (device) -> (the spec with what only the loaded model knows, the module);
    # None: the spec is complete and ``loader`` builds the module
    opener: Callable | None = None
    # the config entry's keys that define the features (recorded in the file)
    entry: tuple = ()

    def image_loader(self) -> Preprocess:
        """The picklable image file -> float32 [3, S, S] function (DataLoader workers)."""
        return self.preprocess or Preprocess(self.input_size)

    def open(self, device="cpu") -> tuple[BackboneSpec, torch.nn.Module]:
        """(the complete spec, the module on ``device`` in eval mode, gradients off)."""
        if self.opener is None:
            return self, self.load(device)
        spec, module = self.opener(self.weights_path())
        spec = dataclasses.replace(spec, entry=self.entry)
        module.eval()
        module.requires_grad_(False)
        return spec, module.to(device)

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
        if self.opener is not None:
            return self.open(device)[1]
        module = self.loader(self.weights_path())
        module.eval()
        module.requires_grad_(False)
        return module.to(device)


@cache
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """file_sha256, cached per (path, size, mtime)."""
    from rshash.digest import file_sha256

    return file_sha256(Path(path))


INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")


# Written out rather than taken from timm's / OpenCLIP's torchvision transforms: the
# image loader runs in DataLoader workers and in `rshash index` without the model's
# library, must decode through rshash.data.images.decode (the one decoder that refuses
# bad files with a message), and keeps the bundled backbones' path byte-identical.
# tests/test_backbone_sources.py checks it against each library's own transform.
@dataclass(frozen=True)
class Preprocess:
    """Image file (or its pixels, uint8 (h, w, 3)) -> float32 [3, size, size] RGB in
    [0, 1] (mean/std are applied on the device). ``resize``: None squashes the whole
    image to size x size (the bundled backbones: aerial tiles have no centre); an int
    resizes the shortest side to it (aspect kept) and ``crop`` ("center") takes the
    centre size x size, as timm's and
    OpenCLIP's eval transforms do; ``squash`` with a ``resize`` squashes to resize x
    resize, then crops (timm's crop_mode "squash")."""

    size: int
    resize: int | None = None
    interpolation: str = "bilinear"
    crop: str = "none"  # none | center | squash

    def __call__(self, path):
        import numpy as np
        from PIL import Image

        from rshash.data.images import decode, load_image

        if self.resize is None:
            return load_image(path, self.size)  # the bundled backbones' path, unchanged
        resample = getattr(Image.Resampling, self.interpolation.upper())
        img = Image.fromarray(path, "RGB") if isinstance(path, np.ndarray) else decode(path)
        w, h = img.size
        if self.crop == "squash":
            new_w = new_h = self.resize
        elif w <= h:  # torchvision's Resize(int): the short side to resize, int() the long
            new_w, new_h = self.resize, int(self.resize * h / w)
        else:
            new_w, new_h = int(self.resize * w / h), self.resize
        if (new_w, new_h) != (w, h):
            img = img.resize((new_w, new_h), resample)
        array = np.asarray(img, dtype=np.float32)
        s = self.size
        if new_w < s or new_h < s:  # torchvision's CenterCrop pads with zeros
            pad = np.zeros((max(s, new_h), max(s, new_w), 3), dtype=np.float32)
            top, left = (pad.shape[0] - new_h) // 2, (pad.shape[1] - new_w) // 2
            pad[top : top + new_h, left : left + new_w] = array
            array, new_h, new_w = pad, pad.shape[0], pad.shape[1]
        top, left = int(round((new_h - s) / 2.0)), int(round((new_w - s) / 2.0))
        array = array[top : top + s, left : left + s]
        return np.ascontiguousarray(array.transpose(2, 0, 1) / np.float32(255))

    def describe(self) -> str:
        if self.resize is None:
            return (
                f"RGB, whole image resized to {self.size} x {self.size} "
                f"({self.interpolation}, no crop), /255"
            )
        how = "squashed to" if self.crop == "squash" else "shortest side resized to"
        return (
            f"RGB, {how} {self.resize} ({self.interpolation}), center crop "
            f"{self.size} x {self.size}, /255"
        )


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache folder, as huggingface_hub computes it (HF_HUB_CACHE,
    else HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/...)."""
    explicit = os.getenv("HF_HUB_CACHE") or os.getenv("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(os.path.expanduser(explicit))
    cache_home = os.getenv("XDG_CACHE_HOME", os.path.join("~", ".cache"))
    hf_home = os.getenv("HF_HOME", os.path.join(cache_home, "huggingface"))
    return Path(os.path.expanduser(hf_home)) / "hub"


def hf_repo_folder(repo_id: str) -> Path:
    """Where huggingface_hub keeps the files of model repository ``repo_id`` (org/name)."""
    return hf_hub_cache() / ("models--" + repo_id.replace("/", "--"))


def hf_snapshot_file(folder: Path, names: tuple[str, ...]) -> Path | None:
    """The first of ``names`` in the snapshot ``refs/main`` names in a hub repository
    ``folder`` (as huggingface_hub's offline lookup finds it; without refs/main, the
    first snapshot holding one), or None."""
    ref = folder / "refs" / "main"
    if ref.is_file():
        snapshots = [folder / "snapshots" / ref.read_text().strip()]
    else:
        snapshots = sorted((folder / "snapshots").glob("*"))
    for snap in snapshots:
        for name in names:
            if (snap / name).is_file():  # a symlink into blobs/ in a real cache
                return snap / name
    return None


def not_in_cache(name: str, what: str, expected: str, command: str) -> RshashError:
    """The one-line error of weights absent from the Hugging Face cache: backbone ``name``,
    ``what`` lacks them, the file ``expected`` and the ``command`` that fetches them."""
    return RshashError(
        f"backbone {name!r}: {what} has no weights in the Hugging Face cache (expected "
        f"{expected}; HF_HOME or HF_HUB_CACHE set the cache folder); rshash never downloads: "
        f"fill the cache once, on a machine with internet, with {command}"
    )


def weights_file(path: str) -> Path:
    """A ``weights:`` file of a config entry; RshashError when it does not exist."""
    file = Path(os.path.expanduser(path))
    if not file.is_file():
        raise RshashError(
            f"weights file {file} does not exist (a backbone's `weights:` is the model's "
            "full state dict, as torch.save or safetensors writes it)"
        )
    return file


def _built_by_opener(_path):
    raise AssertionError("a timm or OpenCLIP backbone is built by BackboneSpec.open")


def library_spec(
    name: str,
    source: str,
    model: str,
    locate: Callable[[], Path],
    *,
    input_size: int = 0,
    mean: tuple = (0.0, 0.0, 0.0),
    std: tuple = (1.0, 1.0, 1.0),
    feature_dim: int = 0,
    preprocess: Preprocess | None = None,
    map_grid: int | None = None,
    opener: Callable | None = None,
) -> BackboneSpec:
    """The spec of a timm or OpenCLIP model: built by its ``opener`` (never by
    ``loader``), its three stages those of ``forward_intermediates``. Before it is
    opened, the preprocessing and feature dimension are placeholders (0: the model's
    own, known once its config is read); the opened spec gives them."""
    return BackboneSpec(
        name=name,
        input_size=input_size,
        mean=mean,
        std=std,
        feature_dim=feature_dim,
        locate=locate,
        loader=_built_by_opener,
        stages=("stage0", "stage1", "stage2"),
        source=source,
        model=model,
        preprocess=preprocess,
        map_grid=map_grid,
        opener=opener,
    )
