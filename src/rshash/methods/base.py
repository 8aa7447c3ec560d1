"""What every hashing method provides."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rshash import RshashError
from rshash.codes import check_bits
from rshash.digest import read_npz, write_npz
from rshash.methods.convergence import ConvergenceParams, TrainingRecord, Validation, joined
from rshash.params import Params


@dataclass
class Encoded:
    """A method's output for a batch of feature vectors."""

    bits: np.ndarray  # (n, bits) uint8 0/1
    value: np.ndarray  # (n, bits) float32, the pre-binarization output
    class_prob: np.ndarray | None = None
    predicted_label: np.ndarray | None = None


class HashMethod:
    """Base class, and the method's declaration: a subclass sets ``name``, ``supervised``,
    ``Params`` (its parameters with defaults), ``inputs`` (what fit/encode read:
    "features", pooled [N, D]; "maps", the last conv maps; "layers", pooled features of
    three stages; "rot", the rotated copies) and whether it has a class head
    (``class_head``, or :meth:`head` when that depends on the parameters), and implements
    ``_fit``, ``encode`` and the ``state``/``load_state`` pair (numpy arrays; a method whose
    state is a few fitted arrays names those attributes in ``state_names`` instead).
    The declaration is read at parse time: a method module imports torch inside functions."""

    name = "base"
    supervised = False
    real_valued = False  # True: no binary codes, bits must be 0 (the `raw` reference)
    Params = Params
    inputs: tuple[str, ...] = ("features",)
    class_head = False  # writes class_prob and predicted_label
    state_names: tuple[str, ...] = ()  # the attributes the default state/load_state keep

    @classmethod
    def head(cls, p: Params) -> tuple[bool, str]:
        """(whether a model with parameters ``p`` has a trained class head, and the
        parameter setting that removes it, for messages)."""
        return cls.class_head, ""

    @classmethod
    def outputs(cls, p: Params | None = None) -> tuple[str, ...]:
        """The codes columns its models write with parameters ``p`` (rshash.codes):
        ``packed`` codes unless real-valued, ``value``, and with a trained class head
        ``class_prob`` and ``predicted_label`` (rshash.rankings.HEAD_COLUMNS)."""
        from rshash.rankings import HEAD_COLUMNS

        head = cls.head(p if p is not None else cls.Params())[0]
        return (
            *(() if cls.real_valued else ("packed",)),
            "value",
            *(HEAD_COLUMNS if head else ()),
        )

    @classmethod
    def rankings(cls, p: Params | None = None) -> tuple[str, ...]:
        """The rankings its codes support with parameters ``p``: those whose needs its
        outputs meet (rshash.rankings)."""
        from rshash.rankings import supported

        return supported(cls.outputs(p))

    @classmethod
    def default_rankings(cls) -> tuple[str, ...]:
        return ("euclidean",) if cls.real_valued else ("hamming",)

    def __init__(self, bits: int, seed: int = 0, threads: int = 1, **params):
        if self.real_valued and bits != 0:
            raise RshashError(f"method '{self.name}' is real-valued: bits must be 0, got {bits}")
        self.bits = check_bits(bits, allow_zero=self.real_valued)
        self.seed = int(seed)
        self.threads = int(threads)
        self.p = self.Params.resolve(params, f"{self.name}.params")
        self.params = params  # as given: the model file's header records these
        self.configure()

    def __getattr__(self, name):
        # the parameters read as attributes (self.lr is self.p.lr) unless set on the instance
        if name != "p" and "p" in self.__dict__ and hasattr(self.p, name):
            return getattr(self.p, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def configure(self) -> None:
        """Set what follows from the parameters ``self.p`` (derived values, normalisers)."""

    @classmethod
    def trained(cls) -> bool:
        """Whether it trains in epochs to convergence (its Params hold the policy of
        rshash.methods.convergence); the others fit in closed form on the whole train part."""
        return issubclass(cls.Params, ConvergenceParams)

    def fit(
        self,
        X,
        y: np.ndarray | None = None,
        validation: Validation | None = None,
        log: Callable[[str], None] | None = None,
    ) -> HashMethod:
        """Fit on X: an [N, D] array, or what the method's registry ``inputs`` say
        (an [N, C, h, w] array for maps, a dict of named arrays for layers).

        A trained method stops early on ``validation`` (rshash.methods.convergence)
        and keeps what happened in ``record``; without one it runs ``epochs``. With
        its policy's ``refit`` it is then fitted again on X and the validation rows for
        the best epoch's number of epochs. ``log`` receives a line per validation check."""
        if not isinstance(X, dict):
            X = np.asarray(X, dtype=np.float32 if np.ndim(X) == 2 else None)
        if self.supervised and y is None:
            raise RshashError(f"method '{self.name}' is supervised: labels are required")
        if validation is not None and not self.trained():
            raise RshashError(
                f"method '{self.name}' fits in closed form: it takes no validation part"
            )
        y = None if y is None else np.asarray(y, dtype=np.int64)
        if validation is not None and y is None:
            raise RshashError(f"method '{self.name}': a validation part needs train labels")
        self._validation, self._fit_part, self._log = validation, (X, y), log
        self.record: TrainingRecord | None = None
        try:
            self._fit(X, y)
            if validation is not None and self.p.refit and self.record.best_epoch:
                self._refit(X, y, validation)
        finally:
            self._validation, self._fit_part, self._log = None, None, None
        return self

    def _refit(self, X, y: np.ndarray, validation: Validation) -> None:
        """Fit again from the seed on X then the validation rows, for the stop's best
        epoch (no validation part: the policy runs exactly ``max_epochs``, ``epochs``
        None)."""
        record, policy = self.record, self.p
        X, y = joined(X, validation.X), np.concatenate([y, validation.y])
        if self._log is not None:
            self._log(f"refit on {len(y)} rows (fit + val) for {record.best_epoch} epochs")
        self._validation, self._fit_part = None, (X, y)
        self.p = dataclasses.replace(policy, max_epochs=record.best_epoch, epochs=None)
        try:
            self._fit(X, y)
        finally:
            self.p = policy
        self.record = dataclasses.replace(record, refit_epochs=record.best_epoch)

    def _fit(self, X: np.ndarray, y: np.ndarray | None) -> None:
        raise NotImplementedError

    def encode(self, X: np.ndarray) -> Encoded:
        raise NotImplementedError

    def state(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in self.state_names}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        for k in self.state_names:
            setattr(self, k, state[k])

    def save(self, path: str | Path, extra: dict | None = None) -> None:
        """Save as .npz (arrays + a JSON header): loads without pickle or torch."""
        header = {
            "method": self.name,
            "bits": self.bits,
            "seed": self.seed,
            "params": self.params,
            **(self.record.header() if getattr(self, "record", None) else {}),
            **(extra or {}),
        }
        arrays = {f"state/{k}": np.asarray(v) for k, v in self.state().items()}
        write_npz(path, header, arrays)


def load_model(path: str | Path) -> tuple[HashMethod, dict]:
    """Rebuild a saved method; returns (method, header)."""
    from rshash.methods import build

    header, arrays = read_npz(path, "model file")
    state = {k[len("state/") :]: v for k, v in arrays.items() if k.startswith("state/")}
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
