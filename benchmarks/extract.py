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
    a = p.parse_args()

    import torch

    from rshash.backbones import get_backbone
    from rshash.data.images import load_image
    from rshash.data.manifest import scan_folder, write_manifest
    from rshash.data.synthetic import generate
    from rshash.features import _device, extract

    torch.set_num_threads(a.threads)
    spec = get_backbone(a.backbone)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
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
            a.backbone,
            tmp / "features.h5",
            threads=a.threads,
            batch_size=a.batch_size,
            device=a.device,
            num_workers=a.num_workers,
            progress=False,
        )
        whole = time.perf_counter() - tic

        dev = _device(a.device)
        model = spec.load(dev)
        images = np.stack([load_image(path, spec.input_size) for path in manifest.path])
        batches = [
            torch.from_numpy(images[i : i + a.batch_size]) for i in range(0, n, a.batch_size)
        ]
        mean = torch.tensor(spec.mean, device=dev).view(1, 3, 1, 1)
        std = torch.tensor(spec.std, device=dev).view(1, 3, 1, 1)
        with torch.inference_mode():
            model((batches[0].to(dev) - mean) / std)  # warm-up (cuDNN autotune, allocator)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            tic = time.perf_counter()
            for x in batches:
                model((x.to(dev) - mean) / std).float().cpu()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            forward = time.perf_counter() - tic

    source = a.folder or f"generated {a.tile}x{a.tile} px tiles"
    print(
        f"backbone {a.backbone} on {dev}, {n} images from {source} -> "
        f"{spec.input_size}x{spec.input_size}, batch {a.batch_size}, threads {a.threads}, "
        f"decode workers {a.num_workers}"
    )
    print(f"whole extraction (decode, resize, forward, write): {n / whole:8.1f} images/s")
    print(f"forward pass alone (decoded batches in memory):    {n / forward:8.1f} images/s")
    print(f"extraction / forward: {forward / whole:.0%}")


if __name__ == "__main__":
    main()
