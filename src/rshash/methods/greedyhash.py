"""GreedyHash, supervised (Su, Zhang, Han and Tian, NeurIPS 2018, "Greedy Hash:
Towards Fast Optimization for Accurate Hash Coding in CNN").

The same MLP as milan (1024-512-K, LeakyReLU) outputs the relaxed code h;
the hash layer takes ``b = sign(h)`` in the forward pass and passes the
gradient through unchanged in the backward pass (the paper's greedy update,
eq. 6-7: dL/dh = dL/db). The supervised version puts a linear classifier
without bias on the binary codes b and minimises (paper eq. 8, with the
reductions of the authors' released code, github.com/ssppp/GreedyHash,
cifar1.py)::

    L = CE(W b, y) + alpha * mean_{i,k} | |h_ik| - 1 |^3

Defaults, from the released supervised code (cifar1.py): ``alpha`` 0.1,
SGD with learning rate 1e-3, momentum 0.9, weight decay 5e-4, batch size
32, 50 epochs with the learning rate divided by 10 after epoch 30
(``lr_step_epoch``). ``input_norm`` "standardize" is the project's choice
for these features (a validation study on milan), not the paper's.

Codes are ``h > 0``; ``value`` is h; the classifier on the binary codes
gives ``class_prob`` (softmax) and ``predicted_label``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import softmax

from rshash.methods.base import Encoded, sign_bits
from rshash.methods.nets import (
    EpochParams,
    MLPParams,
    Normalizer,
    SGDParams,
    TorchMethod,
    mlp,
    run_epochs,
    seed_torch,
    sgd,
    step_decay,
)
from rshash.methods.params import param


@dataclass(frozen=True, kw_only=True)
class GreedyHashParams(MLPParams, EpochParams, SGDParams):
    """The released supervised code's settings (module docstring)."""

    epochs: int = 50
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 5e-4
    lr_step_epoch: int = param(30, min=0)
    alpha: float = param(0.1, min=0)


def greedy_sign(h):
    """sign(h) forward, identity gradient backward (the paper's hash layer)."""
    import torch

    class _Sign(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return torch.sign(x)

        @staticmethod
        def backward(ctx, grad):
            return grad

    return _Sign.apply(h)


def greedyhash_loss(h, logits, y, alpha: float):
    """Cross-entropy of the classifier on sign(h) plus the cubic penalty (torch tensors).

    ``logits`` must be computed from ``greedy_sign(h)`` so gradients reach h."""
    import torch.nn.functional as F

    return F.cross_entropy(logits, y) + alpha * (h.abs() - 1).abs().pow(3).mean()


def _network(d_in: int, hidden, bits: int, n_classes: int, slope: float):
    import torch.nn as nn

    class GreedyNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = mlp(d_in, hidden, bits, slope)
            self.classifier = nn.Linear(bits, n_classes, bias=False)

        def forward(self, x):
            h = self.encoder(x)
            return h, self.classifier(greedy_sign(h))

    return GreedyNet()


class GreedyHash(TorchMethod):
    name = "greedyhash"
    supervised = True

    Params = GreedyHashParams
    class_head = True

    def configure(self):
        self.norm = Normalizer(self.input_norm)

    def _network(self, d_in: int):
        return _network(d_in, self.hidden, self.bits, self.n_classes, self.leaky_slope)

    def _fit(self, X, y):
        import torch

        rng = seed_torch(self.seed, self.threads)
        self.n_classes = int(y.max()) + 1
        Xt, yt = torch.from_numpy(self.norm.fit(X)(X)), torch.from_numpy(y)
        self.net = self._network(X.shape[1])
        opt = sgd(self.net, self.lr, self.momentum, self.weight_decay)
        run_epochs(
            self.net,
            opt,
            rng,
            len(X),
            self.batch_size,
            self.epochs,
            lambda rows: greedyhash_loss(*self.net(Xt[rows]), yt[rows], self.alpha),
            step_decay(opt, self.lr_step_epoch),
        )

    def encode(self, X):
        h, logits = self._forward(X)
        prob = softmax(logits.astype(np.float64), axis=1)
        return Encoded(
            bits=sign_bits(h, 0.0),
            value=h.astype(np.float32),
            class_prob=prob.astype(np.float32),
            predicted_label=prob.argmax(1).astype(np.int64),
        )


METHOD = GreedyHash
