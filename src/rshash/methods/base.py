"""What every hashing method provides."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rshash import RshashError
from rshash.codes import check_bits
from rshash.digest import read_npz, write_npz


@dataclass
class Encoded:
    """A method's output for a batch of feature vectors."""

    bits: np.ndarray  # (n, bits) uint8 0/1
    value: np.ndarray  # (n, bits) float32, the pre-binarization output
    class_prob: np.ndarray | None = None
    predicted_label: np.ndarray | None = None


class HashMethod:
    """Base class. Subclasses set ``name`` and ``supervised`` and implement
    ``_fit``, ``encode`` and the ``state``/``load_state`` pair (numpy arrays)."""

    name = "base"
    supervised = False
    real_valued = False  # True: no binary codes, bits must be 0

    def __init__(self, bits: int, seed: int = 0, threads: int = 1, **params):
        if self.real_valued and bits != 0:
            raise RshashError(f"method '{self.name}' is real-valued: bits must be 0, got {bits}")
        self.bits = check_bits(bits, allow_zero=self.real_valued)
        self.seed = int(seed)
        self.threads = int(threads)
        known = {k for k in inspect.signature(self.configure).parameters}
        unknown = set(params) - known
        if unknown:
            raise RshashError(f"method '{self.name}': unknown parameter(s) "
                              f"{', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        self.params = params
        self.configure(**params)

    def configure(self, **params) -> None:
        """Take the method's own parameters (keyword arguments with defaults)."""

    def fit(self, X, y: np.ndarray | None = None) -> "HashMethod":
        """Fit on X: an [N, D] array, or what the method's registry ``inputs`` say
        (an [N, C, h, w] array for maps, a dict of named arrays for layers)."""
        if not isinstance(X, dict):
            X = np.asarray(X, dtype=np.float32 if np.ndim(X) == 2 else None)
        if self.supervised and y is None:
            raise RshashError(f"method '{self.name}' is supervised: labels are required")
        self._fit(X, None if y is None else np.asarray(y, dtype=np.int64))
        return self

    def _fit(self, X: np.ndarray, y: np.ndarray | None) -> None:
        raise NotImplementedError

    def encode(self, X: np.ndarray) -> Encoded:
        raise NotImplementedError

    def state(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    def save(self, path: str | Path, extra: dict | None = None) -> None:
        """Save as .npz (arrays + a JSON header): loads without pickle or torch."""
        header = {"method": self.name, "bits": self.bits, "seed": self.seed,
                  "params": self.params, **(extra or {})}
        arrays = {f"state/{k}": np.asarray(v) for k, v in self.state().items()}
        write_npz(path, header, arrays)


def load_model(path: str | Path) -> tuple[HashMethod, dict]:
    """Rebuild a saved method; returns (method, header)."""
    from rshash.methods import build

    header, arrays = read_npz(path, "model file")
    state = {k[len("state/"):]: v for k, v in arrays.items() if k.startswith("state/")}
    missing = [k for k in ("method", "bits", "seed", "params") if k not in header]
    if missing:
        raise RshashError(f"{path}: not an rshash model (header lacks {', '.join(missing)})")
    method = build(header["method"], header["bits"], header["seed"], **header["params"])
    try:
        method.load_state(state)
    except KeyError as exc:
        raise RshashError(f"{path}: model state lacks array {exc}") from None
    return method, header


def sign_bits(value: np.ndarray, threshold: float = 0.0) -> np.ndarray:
    """1 where value > threshold, else 0."""
    return (np.asarray(value) > threshold).astype(np.uint8)
