"""Does early stopping stop at convergence? Each trained method against 4x its epochs.

Builds a training set larger than UC Merced's offline: the demo generator at
``--per-class`` images a class of ``--classes`` (default 250 of 10: 2,500 images,
the ``demo_large`` set; ``--classes 30 --per-class 200`` is a 6,000-image set of 30
classes, where classes sharing a texture differ only in their shape), through
EfficientNet-Lite0 on the CPU (the features kinds the methods read), split by
dmch_60_40 (seed 0) with the default validation part (20% of each class's
train part). For every trained method (``--methods``, default all) it then

1. trains to convergence as the pipeline does (train rows, stopping on the val
   rows by mAP@all): epochs run, best epoch, best validation score, and how it
   stopped (the model header's ``stopped``: ``patience``, or ``cap`` when it ran to
   its ``max_epochs``, ``cap, rising`` when the score was still climbing there);
2. trains the same seed for ``--long-factor`` (4) x the epochs the first fit ran,
   without stopping, and scores the final model on the same validation part
   (``--long-factor 0``: the stops alone);

and prints both side by side with the difference and the CPU seconds of each,
and whether the stopped model is within ``--tolerance`` (0.01) of the long one.
Exits non-zero if one is not, or if a run stopped at its cap (they are listed
after the table: a cap is a safety limit, and one that binds on this set is too
low). The queries are never used.

Usage: python benchmarks/convergence.py [--classes 10] [--per-class 250] [--bits 32]
       [--methods milan dmch ...] [--workdir DIR] [--tolerance 0.01]
       [--long-factor 4]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from rshash.data.manifest import scan_folder, write_manifest
from rshash.data.splits import make_split
from rshash.data.synthetic import generate
from rshash.features import extract, read_arrays
from rshash.methods import build, get_method, method_names
from rshash.methods.convergence import Validation


def dataset(workdir: Path, n_classes: int, per_class: int, kinds: set[str]):
    """(arrays by kind, labels, train rows, val rows) of the synthetic set."""
    images = workdir / "images"
    if not images.exists():  # written aside and renamed: a killed run leaves no partial set
        partial = workdir / "images.partial"
        shutil.rmtree(partial, ignore_errors=True)
        generate(partial, n_classes=n_classes, per_class=per_class, size=96, seed=0, noise=25.0)
        partial.rename(images)
    manifest = scan_folder(images)
    write_manifest(manifest, workdir / "manifest.parquet")
    arrays = {}
    for kind in sorted(kinds):
        path = workdir / f"{kind}.h5"
        if not path.exists():
            start = time.process_time()
            extract(
                workdir / "manifest.parquet",
                "efficientnet_lite0",
                path,
                kind=kind,
                threads=2,
                device="cpu",
                progress=False,
            )
            print(f"extracted {kind}: {time.process_time() - start:.0f} CPU s", flush=True)
        got, _ = read_arrays(path)
        arrays.update({("rot_" + k if kind == "rot" else k): v for k, v in got.items()})
    split = make_split(manifest, {"train_fraction": 0.6, "database": "train"}, seed=0)
    index = {k: i for i, k in enumerate(manifest.image_id)}
    rows = {r: split[split.role == r].image_id.map(index).to_numpy() for r in ("train", "val")}
    return arrays, manifest.label.to_numpy().astype(np.int64), rows["train"], rows["val"]


def inputs_of(method, arrays):
    if method.inputs == ("features",):
        return arrays["features"]
    if method.inputs == ("maps",):
        return arrays["maps"]
    return {k: v for k, v in arrays.items() if k.startswith(("layer", "rot_layer"))}


def take(X, rows):
    return {k: v[rows] for k, v in X.items()} if isinstance(X, dict) else X[rows]


def how_stopped(rec) -> str:
    """The record's stop in the table: patience, cap, or cap, rising."""
    if rec.stopped == "cap" and rec.still_rising:
        return "cap, rising"
    return rec.stopped


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--per-class", type=int, default=250)
    ap.add_argument("--bits", type=int, default=32)
    ap.add_argument("--methods", nargs="+")
    ap.add_argument("--workdir")
    ap.add_argument("--tolerance", type=float, default=0.01)
    ap.add_argument("--long-factor", type=int, default=4)
    a = ap.parse_args()
    names = a.methods or [n for n in method_names() if get_method(n).trained()]
    workdir = Path(a.workdir or tempfile.mkdtemp(prefix="rshash-convergence-"))
    workdir.mkdir(parents=True, exist_ok=True)
    kinds = {k for n in names for k in get_method(n).inputs}
    kinds |= {"features"}
    arrays, y, fit, val = dataset(workdir, a.classes, a.per_class, kinds)
    print(f"{len(fit)} train rows, {len(val)} val rows, {a.bits} bits, seed 0\n")
    print(
        f"{'method':<11} {'epochs':>6} {'best':>5} {'val mAP':>8} {'long ep':>7} "
        f"{'long mAP':>8} {'diff':>7} {'CPU s':>6} {'long CPU s':>10}  ok   stopped"
    )
    failed, capped = [], []
    for name in names:
        method = get_method(name)
        X = inputs_of(method, arrays)
        X_fit, X_val = take(X, fit), take(X, val)
        validation = Validation(X_val, y[val])
        start = time.process_time()
        # the stop alone (refit off): the pipeline's refit on train + val changes the model
        # kept, not where it stops
        stopped = build(name, a.bits, seed=0, refit=False)
        stopped.fit(X_fit, y[fit], validation=validation)
        cpu = time.process_time() - start
        rec = stopped.record
        if rec.stopped == "cap":
            capped.append(f"{name} ({how_stopped(rec)}, max_epochs={rec.max_epochs})")
        long_epochs = a.long_factor * rec.epochs_run
        if long_epochs:
            start = time.process_time()
            long = build(name, a.bits, seed=0, max_epochs=long_epochs, epochs=long_epochs)
            long = long.fit(X_fit, y[fit])
            long_cpu = time.process_time() - start
            long_val = validation.score(long, X_fit, y[fit])
            diff = rec.best_val - long_val
            ok = diff >= -a.tolerance
            failed += [] if ok else [name]
            long_cols = f"{long_epochs:>7} {long_val:>8.4f} {diff:>+7.4f}"
            long_cpu_col, ok_col = f"{long_cpu:>10.0f}", "yes" if ok else "NO"
        else:
            long_cols, long_cpu_col, ok_col = f"{'-':>7} {'-':>8} {'-':>7}", f"{'-':>10}", "-"
        print(
            f"{name:<11} {rec.epochs_run:>6} {rec.best_epoch:>5} {rec.best_val:>8.4f} "
            f"{long_cols} {cpu:>6.0f} {long_cpu_col}  {ok_col:<3}  {how_stopped(rec)}",
            flush=True,
        )
    print(f"\nstopped at the cap: {', '.join(capped) if capped else 'none'}")
    if failed:
        print(f"more than {a.tolerance} below {a.long_factor}x the epochs: {', '.join(failed)}")
    return 1 if failed or capped else 0


if __name__ == "__main__":
    raise SystemExit(main())
