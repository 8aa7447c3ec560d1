"""How the trained cells stopped: model files' headers -> one record per split, per cell.

A trained method's model file (``models/{cell}.npz``) records how its training ended
(rshash.methods.convergence): ``stopped`` is ``patience`` (the stop fired), ``cap`` (it
ran to ``max_epochs``; ``still_rising`` when the best check was within the last
``patience`` checks) or ``no_validation`` (``epochs`` by design); a method fitted
in closed form records none. The cell comes from the file's path (the results layout),
since the header names the base method, not the variant. Standard library + numpy only
(the header is read without the arrays).
"""

from __future__ import annotations

import re
from pathlib import Path

from rshash import RshashError
from rshash.digest import read_npz_header

CELL = (
    r"(?P<dataset>[^/]+)/(?P<backbone>[^/]+)/(?P<protocol>[^/]+)/(?P<method>[^/]+)/"
    r"(?P<bits>\d+)/split(?P<seed>\d+)"
)
MODEL = re.compile(rf"models/{CELL}\.npz$")
# a cell of a table: a method x bits of one dataset x backbone x protocol
CELL_KEYS = ("dataset", "backbone", "protocol", "method", "bits")

CAP_NOTE = (
    "stopped at its cap (max_epochs) in at least one split, not by its patience, so it "
    "may not have converged"
)


def model_cell(path) -> dict:
    """The cell of a model file from its path: dataset, backbone, protocol, method (the
    variant), bits and seed."""
    m = MODEL.search(Path(path).as_posix())
    if m is None:
        raise RshashError(f"model file {path}: not under models/ in the results layout")
    cell = m.groupdict()
    return cell | {"bits": int(cell["bits"]), "seed": int(cell["seed"])}


def read_stop(path) -> dict:
    """One model file: its cell (:func:`model_cell`), the header's ``header`` (all of it)
    and how it stopped (``stopped``, ``max_epochs``, ``still_rising``; None for a method
    fitted in closed form or a file written before training recorded it)."""
    cell = model_cell(path)
    header = read_npz_header(path, "model file")
    return cell | {
        "stopped": header.get("stopped"),
        "max_epochs": header.get("max_epochs"),
        "still_rising": header.get("still_rising"),
        "header": header,
    }


def cap_stops(model_paths) -> dict[tuple, dict]:
    """The cells (``CELL_KEYS`` tuples) that stopped at their cap in at least one split:
    ``n_cap`` of ``n_splits`` model files (those recording how they stopped), the caps
    (``max_epochs``, sorted), ``n_rising`` (at the cap with the score still climbing) and
    the ``seeds`` at the cap."""
    cells: dict[tuple, dict] = {}
    for path in model_paths:
        rec = read_stop(path)
        if rec["stopped"] is None:
            continue
        cell = cells.setdefault(
            tuple(rec[k] for k in CELL_KEYS),
            {"n_splits": 0, "n_cap": 0, "n_rising": 0, "max_epochs": set(), "seeds": []},
        )
        cell["n_splits"] += 1
        if rec["stopped"] == "cap":
            cell["n_cap"] += 1
            cell["n_rising"] += bool(rec["still_rising"])
            cell["max_epochs"].add(rec["max_epochs"])
            cell["seeds"].append(rec["seed"])
    return {
        key: c | {"max_epochs": sorted(c["max_epochs"]), "seeds": sorted(c["seeds"])}
        for key, c in sorted(cells.items())
        if c["n_cap"]
    }


def cap_text(key: tuple, cap: dict) -> str:
    """One cell of :func:`cap_stops` in words: ``dmch 32 bits (max_epochs=150; 2 of 3
    splits, the validation score still rising in 2)``."""
    method, bits = key[3], key[4]
    caps = "/".join(str(c) for c in cap["max_epochs"])
    rising = f", the validation score still rising in {cap['n_rising']}" if cap["n_rising"] else ""
    what = "real-valued" if bits == 0 else f"{bits} bits"
    splits = f"{cap['n_cap']} of {cap['n_splits']} splits"
    return f"{method} {what} (max_epochs={caps}; {splits}{rising})"
