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

from rshash.methods.nets import (
    EpochMethod,
    EpochSGDParams,
    class_head_net,
    step_decay,
)
from rshash.params import param


@dataclass(frozen=True, kw_only=True)
class GreedyHashParams(EpochSGDParams):
    """The released supervised code's settings (module docstring): its 50 epochs are
    ``epochs``, run without a validation part, and its rate step at 30 stays; with
    one, at most 500 (50 cannot stop: patience alone is 50 epochs)."""

    max_epochs: int = 500
    epochs: int | None = 50
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


class GreedyHash(EpochMethod):
    name = "greedyhash"
    supervised = True

    Params = GreedyHashParams
    class_head = True

    def _network(self, d_in: int):
        # a linear classifier without bias on the codes b = sign(h)
        return class_head_net(super()._network(d_in), self.bits, self.n_classes, False, greedy_sign)

    def _scheduler(self, opt):
        return step_decay(opt, self.lr_step_epoch)

    def _loss(self, out, y, n_train):
        return greedyhash_loss(*out, y, self.alpha)


METHOD = GreedyHash
