"""CSQ: Central Similarity Quantization (Yuan, Wang, Xu, Cheng, Zhou, Chen and
Feng, CVPR 2020, "Central Similarity Quantization for Efficient Image and
Video Retrieval").

Every class gets a hash centre c in {-1, +1}^K (paper sec. 3.2): the rows of
a Hadamard matrix H_K and of -H_K (``scipy.linalg.hadamard``) when K is a
power of two and C <= 2K - any two of these are K/2 (H rows) or K (h, -h)
bits apart; otherwise every bit of every centre is drawn from Bernoulli(0.5)
(expected distance K/2), redrawing a centre that repeats an earlier one.
The same MLP as milan (1024-512-K, LeakyReLU) ends in tanh, u in (-1, 1),
and is trained towards the centre of its class with (paper eq. 6-9, the
reductions of the authors' released code, github.com/yuanli2333/
Hadamard-Matrix-for-hashing, train.py)::

    L = BCE((u + 1) / 2, (c + 1) / 2) + lambda * mean_{i,k} (|u_ik| - 1)^2

(the BCE is averaged over images and bits; the paper writes the
quantization prior as log cosh(|u| - 1), whose released code is the
square above.)

Defaults: ``lam`` 1e-4 (the CSQ reference implementation in DeepHash-pytorch,
CSQ.py config "lambda"; the authors' own options.py uses 0.05 together with an
extra pairwise term that the paper's CSQ objective does not have); Adam with learning rate 1e-3
and betas (0.9, 0.999) (the released code's rate for the hash layers),
mini-batches of 64, 90 epochs with the rate multiplied by 0.7 every 10
epochs (released train.py / options.py). ``input_norm`` "standardize" is the
project's choice for these features (a validation study on milan), not the
paper's. Codes are ``u > 0``; ``value`` is u.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import hadamard

from rshash import RshashError
from rshash.methods.nets import (
    AdamParams,
    EpochMethod,
    EpochParams,
    MLPParams,
    adam,
    step_decay,
)
from rshash.params import param


def hash_centers(n_classes: int, bits: int, rng: np.random.Generator) -> np.ndarray:
    """(n_classes, bits) float32 centres in {-1, +1} (paper sec. 3.2)."""
    if bits & (bits - 1) == 0 and n_classes <= 2 * bits:
        H = hadamard(bits).astype(np.float32)
        return np.concatenate([H, -H])[:n_classes]
    if n_classes > 2**bits:
        raise RshashError(f"csq: {n_classes} classes need more than {bits} bits")
    centers = np.empty((n_classes, bits), np.float32)
    for c in range(n_classes):
        while True:
            centers[c] = 2.0 * rng.integers(0, 2, size=bits) - 1.0
            if not (centers[:c] == centers[c]).all(1).any():
                break
    return centers


def csq_loss(u, centers, lam: float):
    """Central similarity (BCE towards each row's centre) plus quantization (torch tensors:
    u the (n, K) tanh outputs, centers the (n, K) +-1 centres of their classes)."""
    import torch.nn.functional as F

    central = F.binary_cross_entropy(0.5 * (u + 1), 0.5 * (centers + 1))
    return central + lam * (u.abs() - 1).pow(2).mean()


@dataclass(frozen=True, kw_only=True)
class CSQParams(MLPParams, EpochParams, AdamParams):
    """The released code's settings, lam from DeepHash-pytorch (module docstring): its
    90 epochs are ``epochs``, run without a validation part, and its rate step every 10
    stays; with one, at most 300."""

    max_epochs: int = 300
    epochs: int | None = 90
    batch_size: int = 64
    lr: float = 1e-3
    lr_decay: float = param(0.7, min=0)
    lr_step_epoch: int = param(10, min=0)
    lam: float = param(1e-4, min=0)


class CSQ(EpochMethod):
    name = "csq"
    supervised = True

    Params = CSQParams
    activation = "Tanh"

    def _extra_state(self):
        return {"centers": self.centers}

    def _load_extra_state(self, state):
        self.centers = np.asarray(state["centers"], np.float32)

    def _targets(self, y, rng):
        """Each row's class centre (drawn first from the seeded generator)."""
        self.centers = hash_centers(int(y.max()) + 1, self.bits, rng)
        return self.centers[y]

    def _optimizer(self):
        return adam(self.net, self.lr, self.betas)

    def _scheduler(self, opt):
        return step_decay(opt, self.lr_step_epoch, self.lr_decay)

    def _loss(self, u, centers, n_train):
        return csq_loss(u, centers, self.lam)


METHOD = CSQ
