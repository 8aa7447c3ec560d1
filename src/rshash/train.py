"""One training job: fit a method on a split's train part, write model and codes.

The model stays in memory between fitting and encoding, so one job writes
both ``models/{cell}.npz`` and ``codes/{cell}.parquet``.

What a method reads is declared by its class (``inputs``, rshash.methods.base):
``features`` (the pooled vector: fit/encode get an [N, D] array), ``maps``
(an [N, C, h, w] array) or ``layers`` / ``rot`` (a dict of ``layer0..2``
and ``rot_layer0..2``). A method that reads ``rot`` also encodes the three
rotated copies of each query: rows with role ``rotated`` and image id
``{query}@rot90`` / ``@rot180`` / ``@rot270`` (for ``rotation_top3``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from rshash import RshashError
from rshash.codes import ROTATED_ROLE, ROTATIONS, rotated_id, write_codes
from rshash.data.splits import read_split, train_part
from rshash.digest import digest_of
from rshash.features import read_arrays, read_features
from rshash.methods import build, method_info
from rshash.methods.convergence import Validation, cap_warning


def _inputs(info, feats, extra: dict, path_of: dict) -> tuple[object, dict]:
    """(what fit/encode take for all images, rotated copies or {})."""
    if info.inputs == ("features",):
        return feats.features, {}
    arrays: dict[str, np.ndarray] = {}
    for kind in info.inputs:
        if kind not in extra:
            raise RshashError(f"method needs the '{kind}' features file; none was given")
        got, image_id = read_arrays(extra[kind])
        if not np.array_equal(image_id, feats.image_id):
            raise RshashError(
                f"{extra[kind]}: images differ from {path_of['features']} "
                "(extracted from another manifest?)"
            )
        prefix = "rot_" if kind == "rot" else ""
        arrays.update({prefix + k: v for k, v in got.items()})
    if info.inputs == ("maps",):
        return arrays["maps"], {}
    return arrays, {k: v for k, v in arrays.items() if k.startswith("rot_")}


def _take(X, rows):
    if isinstance(X, dict):
        return {k: v[rows] for k, v in X.items()}
    return X[rows]


def train_cell(
    features_path,
    split_path,
    method: str,
    bits: int,
    seed: int,
    params: dict | None,
    model_out,
    codes_out,
    threads: int = 1,
    extra: dict | None = None,
    val_metric: str = "map_all",
    log=print,
) -> dict:
    """Fit ``method`` (a registered base method) and write its model and codes.

    ``features_path`` is the pooled features file (ids, labels, backbone);
    ``extra`` maps further kinds the method reads (maps, layers, rot) to their files.
    A trained method stops on the split's val rows, scored by ``val_metric`` (the
    protocol's first mAP cut-off: map_all or map_at_K); ``log`` gets its checks, and a
    warning when it stopped at its cap with the score still climbing (the model header's
    ``stopped`` and ``still_rising``).
    """
    start = time.perf_counter()
    info = method_info(method)
    extra = dict(extra or {})
    feats = read_features(features_path)
    split = read_split(split_path)
    index = {image_id: i for i, image_id in enumerate(feats.image_id)}
    missing = [i for i in split.image_id.unique() if i not in index]
    if missing:
        raise RshashError(
            f"{split_path}: {len(missing)} image(s) not in {features_path}, e.g. {missing[0]}"
        )
    X, rotated = _inputs(info, feats, extra, {"features": features_path})
    rows = split.image_id.map(index).to_numpy()
    trained = info.trained()
    # a trained method fits on the train rows and stops on the val rows (then, with its
    # policy's refit, fits again on both for the stop's epochs); a closed-form one fits on
    # the whole train part (both, in the split's order)
    fit_mask = (split.role == "train") if trained else train_part(split)
    train_rows = rows[fit_mask.to_numpy()]
    val_rows = rows[(split.role == "val").to_numpy()] if trained else rows[:0]
    if len(train_rows) == 0:
        raise RshashError(f"{split_path}: no train images")
    validation = (
        Validation(_take(X, val_rows), feats.label[val_rows], val_metric) if len(val_rows) else None
    )
    with threadpool_limits(limits=threads):
        model = build(method, bits, seed=seed, threads=threads, **(params or {}))
        if trained and validation is None:
            n = model.p.epochs_without_validation()
            log(f"{split_path}: no val rows, so no early stopping: training runs {n} epochs")
        y_fit = feats.label[train_rows] if model.supervised or validation else None
        model.fit(_take(X, train_rows), y_fit, validation=validation, log=log)
        # one line when it stopped at its cap with the validation score still climbing
        warning = cap_warning(
            getattr(model, "record", None),
            f"{method} {bits} bits {Path(split_path).stem} ({model_out})",
        )
        if warning is not None:
            log(warning)
        unique_rows, inverse = np.unique(rows, return_inverse=True)
        plain = (
            {k: v for k, v in X.items() if not k.startswith("rot_")} if isinstance(X, dict) else X
        )
        enc = model.encode(_take(plain, unique_rows))
        image_id, role = split.image_id.to_numpy(), split.role.to_numpy()
        encodings = [(enc, inverse, image_id, role, feats.label[rows])]
        if rotated:
            query_rows = rows[(split.role == "query").to_numpy()]
            query_ids = split.image_id.to_numpy()[(split.role == "query").to_numpy()]
            for r, degrees in enumerate(ROTATIONS):
                view = {k[len("rot_") :]: v[query_rows, r] for k, v in rotated.items()}
                encodings.append(
                    (
                        model.encode(view),
                        np.arange(len(query_rows)),
                        np.array([rotated_id(i, degrees) for i in query_ids]),
                        np.full(len(query_rows), ROTATED_ROLE),
                        feats.label[query_rows],
                    )
                )
    seconds = time.perf_counter() - start
    # The digests of what the model was trained from (paths vary; contents do not).
    inputs = {
        "features": feats.sha256,
        "split": digest_of(split_path),
        **{kind: digest_of(p) for kind, p in sorted(extra.items())},
    }
    extra_header = {
        "features": str(features_path),
        "split": str(split_path),
        "backbone": feats.attrs.get("backbone"),
        "inputs": inputs,
    }
    if feats.attrs.get("source"):  # a timm / OpenCLIP backbone: what index and search load
        extra_header["backbone_source"] = feats.attrs["source"]
    model.save(model_out, extra=extra_header)

    def stack(get):
        parts = [get(e) for e in encodings]
        return None if parts[0] is None else np.concatenate(parts)

    write_codes(
        codes_out,
        image_id=stack(lambda e: e[2]),
        label=stack(lambda e: e[4]),
        role=stack(lambda e: e[3]),
        packed=stack(lambda e: np.packbits(e[0].bits.astype(bool), axis=1)[e[1]]),
        value=stack(lambda e: e[0].value[e[1]]),
        bits=bits,
        class_prob=stack(lambda e: None if e[0].class_prob is None else e[0].class_prob[e[1]]),
        predicted_label=stack(
            lambda e: None if e[0].predicted_label is None else e[0].predicted_label[e[1]]
        ),
        # No timings or dates here: the same seed gives a byte-identical file.
        metadata={
            "rshash.method": method,
            "rshash.backbone": str(feats.attrs.get("backbone")),
            "rshash.inputs": json.dumps(inputs, sort_keys=True),
        },
    )
    record = model.record.header() if getattr(model, "record", None) else {}
    return {"seconds": seconds, "n_train": int(len(train_rows)), **record}
