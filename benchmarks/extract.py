"""Feature extraction throughput: the whole extraction vs the forward pass alone.

Generates a synthetic class-folder dataset (the demo generator) at the
backbone's typical tile size, or takes ``--images`` images spread over the
classes of a real class-folder dataset (``--folder``), then times

* the whole extraction as the rule runs it (decode, resize, forward, HDF5
  write): images per second of ``rshash.features.extract``;
* the forward pass alone on the same images, already decoded and batched.

Usage: python benchmarks/extract.py [--backbone efficientnet_lite0] [--images 256]
       [--folder /path/to/UCMerced_LandUse/Images]
       [--batch-size 32] [--num-workers 0] [--threads 2] [--device auto]
       [--timm vit_base_patch14_dinov2.lvd142m [--random-weights]] [--input-size 224]
       [--precision fp32|bf16|fp16]

``--timm NAME`` benchmarks a timm model as the backbone (its weights from the
Hugging Face cache); with ``--random-weights`` the model's random initialization is
written into a temporary cache first (speed does not depend on the weights), e.g.
a ViT-B/14 on a GPU: ``--device cuda --timm vit_base_patch14_dinov2.lvd142m
--random-weights --batch-size 128 --num-workers 8 --precision bf16``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--tile", type=int, default=256, help="side of the generated tiles (pixels)")
    p.add_argument("--folder", help="a class-folder dataset to read instead of generated tiles")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--device", default="auto")
    p.add_argument("--timm", help="a timm model name: benchmark it instead of --backbone")
    p.add_argument("--random-weights", action="store_true", help="with --timm: no cache needed")
    p.add_argument("--input-size", type=int, help="replaces the model's own input size")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    a = p.parse_args()

    import torch

    from rshash.backbones import resolve
    from rshash.data.manifest import scan_folder, write_manifest
    from rshash.data.synthetic import generate
    from rshash.features import _autocast, _device, extract

    torch.set_num_threads(a.threads)
    source = {"timm": a.timm} if a.timm else {}
    if a.input_size:
        source["input_size"] = a.input_size
    name = "timm_model" if a.timm else a.backbone
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if a.timm and a.random_weights:
            source["weights"] = str(_random_timm_weights(a.timm, tmp))
        if a.folder:  # every k-th image, so the subset spans the classes
            manifest = scan_folder(a.folder)
            manifest = manifest.iloc[:: max(1, len(manifest) // a.images)].head(a.images)
        else:
            generate(tmp / "images", n_classes=10, per_class=max(1, a.images // 10), size=a.tile)
            manifest = scan_folder(tmp / "images")
        write_manifest(manifest, tmp / "manifest.parquet")
        n = len(manifest)

        tic = time.perf_counter()
        extract(
            tmp / "manifest.parquet",
            name,
            tmp / "features.h5",
            threads=a.threads,
            batch_size=a.batch_size,
            device=a.device,
            num_workers=a.num_workers,
            progress=False,
            source=source,
            precision=a.precision,
        )
        whole = time.perf_counter() - tic

        dev = _device(a.device)
        spec, model = resolve(name, source).open(dev)
        load = spec.image_loader()
        images = np.stack([load(path) for path in manifest.path])
        batches = [
            torch.from_numpy(images[i : i + a.batch_size]) for i in range(0, n, a.batch_size)
        ]
        mean = torch.tensor(spec.mean, device=dev).view(1, 3, 1, 1)
        std = torch.tensor(spec.std, device=dev).view(1, 3, 1, 1)
        with torch.inference_mode(), _autocast(dev, a.precision):
            model((batches[0].to(dev) - mean) / std)  # warm-up (cuDNN autotune, allocator)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            tic = time.perf_counter()
            for x in batches:
                model((x.to(dev) - mean) / std).float().cpu()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            forward = time.perf_counter() - tic

    origin = a.folder or f"generated {a.tile}x{a.tile} px tiles"
    workers = max(a.num_workers, a.threads - 1) if dev.type == "cuda" else a.num_workers
    print(
        f"backbone {a.timm or a.backbone} on {dev}, {n} images from {origin} -> "
        f"{spec.input_size}x{spec.input_size}, batch {a.batch_size}, threads {a.threads}, "
        f"decode workers {workers}, precision {a.precision}"
    )
    print(f"whole extraction (decode, resize, forward, write): {n / whole:8.1f} images/s")
    print(f"forward pass alone (decoded batches in memory):    {n / forward:8.1f} images/s")
    print(f"extraction / forward: {forward / whole:.0%}")


def _random_timm_weights(model: str, folder: Path) -> Path:
    """The model's random initialization as a weights file (its full state dict)."""
    import timm
    from safetensors.torch import save_file

    net = timm.create_model(model, pretrained=False)
    path = folder / "random_weights.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return path


if __name__ == "__main__":
    main()
