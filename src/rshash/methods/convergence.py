"""Training to convergence: one early-stopping policy for every trained method.

A trained method's budget is a maximum in epochs (``max_epochs``), not a number of
steps tuned on one dataset: an epoch is a pass over the part it fits on, so the budget
grows with the dataset. Every ``val_every`` epochs (and after the last) the codes of the
validation part (the split's ``val`` rows, carved per class from the train part; never
the queries) are ranked by Hamming distance against the codes of the part it fits on,
and scored by the protocol's first mAP cut-off (``map_all`` for ``all``). Training stops
once ``patience`` checks in a row have not beaten the best score by more than
``min_delta`` and at least ``grace`` x the best epoch has passed since the best, and
the model is put back to its state at the best check.

The policy's parameters are the same for every method (``ConvergenceParams``, a base of
each trained method's Params); a method restates its own ``max_epochs`` (a cap set
well above where its stop has fired, so that it does not bind) and ``epochs`` (its
paper's count where the paper gives one) and no other unless measured to need it
(milan's ``grace``), and a variant of it that changes none of them keeps its parent's
policy. A fit without a validation part runs ``epochs``, at most ``max_epochs``.

With ``refit`` (the default) the stop only chooses the number of epochs: the model
is then fitted again from its seed on the whole train part (fit and validation rows)
for ``best_epoch`` epochs, so that the model scored on the queries has seen every
training image, as the closed-form methods and the papers' protocols have. On UC Merced,
keeping the stopped model fitted on 80% of the train part cost dmch 1 to 2 and csq 1.3
points of test mAP@all.

What happened is a :class:`TrainingRecord`: the epochs run, the best epoch, the best
validation score and the curve, the epochs of the refit, and how training ended
(``stopped``: ``patience``, the stop fired; ``cap``, it ran to ``max_epochs``, with
``still_rising`` when the best check was within the last ``patience`` checks, i.e. the
score was still climbing; ``no_validation``, no validation part, so ``epochs`` by
design), written at the top of the model file's header. :func:`cap_warning` is the
training log's line for a cell that stopped at its cap still rising.

Written out rather than taken from a training library (Lightning's EarlyStopping,
ignite's): the methods keep their own hand-written epoch loops (their seeded sampling
fixes the codes), and the loop below is a dozen lines.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from rshash import RshashError
from rshash.params import Params, param

VAL_METRIC = re.compile(r"map_all|map_at_[1-9][0-9]*")


@dataclass(frozen=True, kw_only=True)
class ConvergenceParams(Params):
    """The convergence policy. Every ``val_every`` epochs a check; stop after
    ``patience`` checks without an improvement above ``min_delta`` once ``grace`` x the
    best epoch has passed since the best; at most ``max_epochs`` (each method states
    its own); with ``refit``, fit again on train + val for the best epoch's epochs.
    Without a validation part: ``epochs``."""

    # A safety limit, not a budget: each method's is several times the most epochs its
    # stop has needed on the sets measured (README, "Training to convergence"), so that the
    # stop, not the cap, ends training. 0: the untrained network (a reference).
    max_epochs: int = param(min=0, max=100_000)
    # Without a validation part (a protocol's val_fraction 0, or a fit given none) nothing
    # can stop training: it runs ``epochs`` (at most max_epochs; None: max_epochs). Each
    # method states its paper's epoch count where the paper gives one, else the fixed
    # budget it had before training to convergence.
    epochs: int | None = param(None, min=0, max=100_000)

    def epochs_without_validation(self) -> int:
        """The epochs a fit without a validation part runs: ``epochs``, at most
        ``max_epochs``."""
        return self.max_epochs if self.epochs is None else min(self.epochs, self.max_epochs)

    # 5 x 10: 50 epochs without a better validation score stop training. Checked on the
    # 250-images-a-class demo set (benchmarks/convergence.py: each stopped model within
    # 0.01 validation mAP of 4x its epochs) and on UC Merced (README, "Training to
    # convergence").
    val_every: int = param(5, min=1)
    patience: int = param(10, min=1)
    min_delta: float = param(0.0, min=0)
    # ... and not before ``grace`` x the best epoch has passed since it (0: off). Off by
    # default since the refit: on UC Merced, grace 1 ran dmch to twice its best epoch and
    # kept the same epoch (the same codes) at 1.2x the CPU time; on the demo, milan
    # stopped by patience alone and refitted reaches 0.928 mAP@all at 32 bits.
    grace: float = param(0.0, min=0)
    # the stop chooses the epochs; the model kept is refitted on train + val for them.
    # Keeping the stopped model instead (fitted on 80% of the train part) cost dmch 1 to
    # 2 and csq 1.3 points of test mAP@all on UC Merced.
    refit: bool = True


def val_metric_name(cutoff) -> str:
    """The validation score of a protocol whose first mAP cut-off is ``cutoff``
    (``all`` or an integer): ``map_all`` or ``map_at_{k}``."""
    if str(cutoff) == "all":
        return "map_all"
    return f"map_at_{int(cutoff)}"


@dataclass
class Validation:
    """A validation part (what ``encode`` takes, and its labels) and its score's name."""

    X: object
    y: np.ndarray
    metric: str = "map_all"

    def __post_init__(self):
        if not VAL_METRIC.fullmatch(self.metric):
            raise RshashError(f"validation metric must be map_all or map_at_K, got {self.metric!r}")
        self.y = np.asarray(self.y, np.int64)
        if len(self.y) == 0:
            raise RshashError("the validation part is empty")

    def score(self, method, X_fit, y_fit) -> float:
        """The validation score of ``method`` as it is now: the validation codes ranked
        by Hamming distance against those of the fit part (its database)."""
        from rshash.evaluate import evaluate_arrays

        q, db = method.encode(_plain(self.X)), method.encode(_plain(X_fit))
        cutoffs = () if self.metric == "map_all" else (int(self.metric.rsplit("_", 1)[1]),)
        result = evaluate_arrays(
            np.packbits(q.bits.astype(bool), axis=1),
            self.y,
            np.packbits(db.bits.astype(bool), axis=1),
            y_fit,
            map_cutoffs=cutoffs,
            ks=(),
            bits=method.bits,
        )
        return float(result[self.metric])


def _plain(X):
    """What encode takes: a dict of inputs without the rotated copies (``rot_*``)."""
    if isinstance(X, dict):
        return {k: v for k, v in X.items() if not k.startswith("rot_")}
    return X


@dataclass
class TrainingRecord:
    """What a fit to convergence did; ``header()`` is what the model file keeps."""

    epochs_run: int
    best_epoch: int
    best_val: float | None
    val_curve: list[list] = field(default_factory=list)  # [[epoch, score], ...]
    val_metric: str | None = None
    refit_epochs: int | None = None  # epochs of the refit on train + val (None: no refit)
    # how it ended: "patience" (the stop fired), "cap" (ran to max_epochs) or
    # "no_validation" (no validation part: ``epochs`` by design)
    stopped: str | None = None
    max_epochs: int | None = None  # the cap it ran under
    # at the cap: whether the best check was within the last ``patience`` checks (the
    # score still climbing); None unless stopped at the cap
    still_rising: bool | None = None

    def header(self) -> dict:
        return {
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "best_val": self.best_val,
            "val_curve": self.val_curve,
            "val_metric": self.val_metric,
            "refit_epochs": self.refit_epochs,
            "stopped": self.stopped,
            "max_epochs": self.max_epochs,
            "still_rising": self.still_rising,
        }


def cap_warning(record: TrainingRecord | None, who: str, last: int = 3) -> str | None:
    """The training log's warning for a fit that stopped at its cap while its validation
    score was still climbing (``who`` names the cell), or None."""
    if record is None or record.stopped != "cap" or not record.still_rising:
        return None
    scores = ", ".join(f"{s:.3f}" for _, s in record.val_curve[-last:])
    return (
        f"warning: {who} stopped at its cap max_epochs={record.max_epochs} with val "
        f"{record.val_metric} still rising ({scores}; best {record.best_val:.3f} at epoch "
        f"{record.best_epoch}): raise it with a variant's params: {{max_epochs: ...}}"
    )


def joined(a, b):
    """The rows of ``a`` then those of ``b``: arrays, or dicts of arrays (key by key)."""
    if isinstance(a, dict):
        return {k: np.concatenate([a[k], b[k]]) for k in a}
    return np.concatenate([a, b])


def train_to_convergence(
    p: ConvergenceParams,
    one_epoch: Callable[[int], None],
    score: Callable[[], float] | None,
    snapshot: Callable[[], object],
    restore: Callable[[object], None],
    metric: str | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainingRecord:
    """Run ``one_epoch(epoch)`` for epoch 1, 2, ... under the policy ``p``; ``score()``
    is the validation score now (None: no validation part, run ``epochs``, at most
    ``max_epochs``). ``snapshot()`` copies the model's state and ``restore(copy)`` puts
    it back."""
    curve: list[list] = []
    best, best_epoch, best_state, waited = -math.inf, 0, None, 0
    epoch, fired = 0, False
    last = p.max_epochs if score is not None else p.epochs_without_validation()
    for epoch in range(1, last + 1):
        one_epoch(epoch)
        if score is None or (epoch % p.val_every and epoch != last):
            continue
        value = score()
        curve.append([epoch, value])
        if value > best + p.min_delta:
            best, best_epoch, best_state, waited = value, epoch, snapshot(), 0
        else:
            waited += 1
        if log is not None:
            log(f"epoch {epoch}: val {metric} {value:.4f} (best {best:.4f} at epoch {best_epoch})")
        if waited >= p.patience and epoch - best_epoch >= p.grace * best_epoch:
            fired = True
            break
    if score is None:
        return TrainingRecord(
            epochs_run=epoch,
            best_epoch=epoch,
            best_val=None,
            stopped="no_validation",
            max_epochs=p.max_epochs,
        )
    if best_epoch != epoch:
        restore(best_state)
    if log is not None:
        log(f"stopped after epoch {epoch}; kept epoch {best_epoch} (val {metric} {best:.4f})")
    # at the cap, still rising: the best check is one of the last ``patience`` checks
    rising = None if fired else bool(curve) and waited < p.patience
    return TrainingRecord(
        epoch,
        best_epoch,
        best,
        curve,
        metric,
        stopped="patience" if fired else "cap",
        max_epochs=p.max_epochs,
        still_rising=rising,
    )
