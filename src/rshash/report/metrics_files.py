"""Reading and validating ``metrics/{cell}/{ranking}.json``: the one reader of the report layer.

Tables and figures both read metrics files through :func:`read_metrics`, so a
file a table accepts is a file a figure accepts, and every problem is one
RshashError naming the file. A record is a dict with the cell fields
(``CELL_FIELDS``), ``ranking``, ``metrics`` (scalar metrics; ``null`` reads as
NaN) and ``curves`` (the file's ``curves`` object, ``{}`` when it has none).
Standard library + numpy only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from rshash import RshashError

CELL_FIELDS = ("dataset", "backbone", "protocol", "method", "bits", "seed")


def _fail(path, why: str):
    raise RshashError(f"metrics file {path}: {why}")


def _as_int(path, field: str, value) -> int:
    if isinstance(value, bool):
        _fail(path, f"cell.{field} must be an integer, got {value!r}")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    _fail(path, f"cell.{field} must be an integer, got {value!r}")


def _cell(path, doc: dict) -> dict:
    cell = doc.get("cell")
    if not isinstance(cell, dict):
        _fail(path, "no 'cell' object")
    out = {}
    for field in CELL_FIELDS:
        if field not in cell:
            _fail(path, f"cell has no '{field}'")
        value = cell[field]
        if field in ("bits", "seed"):
            out[field] = _as_int(path, field, value)
        else:
            if not isinstance(value, str) or not value:
                _fail(path, f"cell.{field} must be a non-empty string, got {value!r}")
            out[field] = value
    return out


def _scalars(path, metrics) -> dict[str, float]:
    if not isinstance(metrics, dict):
        _fail(path, "no 'metrics' object")
    scalars = {}
    for name, value in metrics.items():
        if isinstance(value, (list, dict)):
            continue  # a curve; curves stay in the metrics files
        if value is None:
            scalars[name] = math.nan
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            scalars[name] = float(value)
        else:
            _fail(path, f"metric '{name}' is not a number: {value!r}")
    if not scalars:
        _fail(path, "'metrics' holds no scalar metric")
    return scalars


def read_metrics_file(path) -> dict:
    """Read and check one metrics JSON; returns its record (see the module docstring).

    Non-scalar entries of ``metrics`` (curves) are skipped; ``null`` reads as NaN.
    """
    p = Path(path)
    if not p.is_file():
        _fail(path, "not found")
    try:
        doc = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        _fail(path, f"not valid JSON ({exc})")
    if not isinstance(doc, dict):
        _fail(path, "top level is not a JSON object")
    out = _cell(path, doc)
    ranking = doc.get("ranking")
    if not isinstance(ranking, str) or not ranking:
        _fail(path, f"'ranking' must be a non-empty string, got {ranking!r}")
    out["ranking"] = ranking
    out["metrics"] = _scalars(path, doc.get("metrics"))
    curves = doc.get("curves", {})
    if not isinstance(curves, dict):
        _fail(path, "'curves' is not a JSON object")
    out["curves"] = curves
    out["path"] = str(path)
    return out


def read_metrics(metric_paths, what: str) -> list[dict]:
    """Read every metrics file; RshashError on none or on two for the same cell+seed+ranking.

    ``what`` names the consumer in the error for an empty list (``experiment 'x'``).
    """
    if not metric_paths:
        raise RshashError(f"{what}: no metrics files given")
    seen = {}
    records = []
    for path in metric_paths:
        rec = read_metrics_file(path)
        key = tuple(rec[f] for f in CELL_FIELDS) + (rec["ranking"],)
        if key in seen:
            raise RshashError(
                f"metrics files {seen[key]} and {path} are for the same cell "
                f"{'/'.join(map(str, key[:5]))}/split{key[5]} and ranking {key[6]}"
            )
        seen[key] = str(path)
        records.append(rec)
    return records


def curve(rec: dict, kind: str, *fields: str, required: bool = False):
    """One curve of a record: its named fields as a tuple, or the whole object without fields.

    None when the file has no such curve (an RshashError naming the file when
    ``required``); a curve that is not an object or lacks a field names the file.
    """
    c = rec["curves"].get(kind)
    if c is None:
        if required:
            _fail(rec["path"], f"no '{kind}' curve")
        return None
    if not isinstance(c, dict):
        _fail(rec["path"], f"curve '{kind}' is not a JSON object")
    missing = [f for f in fields if f not in c]
    if missing:
        _fail(rec["path"], f"curve '{kind}' has no '{missing[0]}'")
    return tuple(c[f] for f in fields) if fields else c
