"""HashNet: deep learning to hash by continuation (Cao, Long, Wang and Yu, ICCV 2017,
"HashNet: Deep Learning to Hash by Continuation").

The same MLP as milan (1024-512-K, LeakyReLU) outputs z, and the hash layer is
``h = tanh(beta z)`` (paper sec. 3.2). Continuation: beta grows during
training so that tanh(beta z) approaches sgn(z); the schedule is the
authors' released code's (github.com/thuml/HashNet, pytorch/src/network.py)::

    beta_t = init_scale * (1 + gamma * t')^power,  t' = step_size * floor(t / step_size)

with init_scale 1, gamma 0.005, power 0.5, step_size 200 (beta is updated
every 200 iterations; :func:`continuation_scale`).

Loss (paper eq. 4-6, weighted maximum likelihood): with s_ij = 1 for two
images of the same class, over the set S of pairs i < j of a mini-batch,
S_1 its similar and S_0 its dissimilar pairs::

    L = sum_{s_ij in S} w_ij (log(1 + exp(alpha <h_i, h_j>)) - alpha s_ij <h_i, h_j>)
    w_ij = |S| / |S_1| if s_ij = 1,  |S| / |S_0| if s_ij = 0

(c_ij = 1 for single-label data), with |S_1| and |S_0| counted in the
mini-batch (as the released code's ``pairwise_loss_updated`` does), divided
by |S|: the mean over the similar pairs plus the mean over the dissimilar
pairs (:func:`hashnet_loss`; a group with no pair in the batch contributes
nothing). ``alpha``, the adaptive sigmoid's scale, defaults to 10 / K
(``alpha`` None), the released code's ``sigmoid_param``. There is no quantization term (the released
code's ``q_weight`` is 0; continuation does that work).

Training, from the released code (pytorch/src/train.py): SGD with Nesterov
momentum 0.9 and weight decay 5e-4; its rate is 3e-4 for the pre-trained
layers and 10 times that for the new hash layer (every layer here is new),
halved every 2000 iterations (``lr_step``). Each iteration sees two batches
of 36 images; here one batch of 72 (``batch_size``) with all its pairs. The
released code runs 10,000 iterations, out of the project's budget (under
45 s for one UC Merced fit on one CPU thread; 1,000 iterations took about
14 s of CPU time here). It is now stopped on the split's validation part
(rshash.methods.convergence), at most 2,000 epochs (``epochs`` 500, about 7,000
iterations on UC Merced's train rows, without one); beta and the rate step still
count iterations.
Before that, ``iterations`` 2000 (final beta sqrt(11), about 3.3) and ``lr`` 0.01
were chosen on a validation part of the UC Merced train split (dmch_60_40
split 0, 80 / 20, 32 bits, validation mAP@all: 1500 / 2000 / 3000 / 4000
iterations at lr 0.01 0.971 / 0.976 / 0.975 / 0.973; at 2000, lr 0.003 /
0.01 / 0.03 0.955 / 0.976 / 0.972; 64 bits 0.974). ``input_norm``
"standardize" is the project's choice for these features (a validation
study on milan), not the paper's.

Codes are ``z > 0`` (sgn(h)); ``value`` is h = tanh(beta z) at the final beta.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rshash.methods.base import Encoded, sign_bits
from rshash.methods.dpsh import pair_similarity
from rshash.methods.nets import MLPParams, SGDParams, TorchMethod, seed_torch, sgd, train_step
from rshash.params import param


@dataclass(frozen=True, kw_only=True)
class HashNetParams(MLPParams, SGDParams):
    """The released code's settings; lr 0.01 chosen on a validation part (module
    docstring); ``epochs`` 500 without a validation part; with one, at most 2,000,
    stopped on it. ``alpha`` null: 10 / K."""

    max_epochs: int = 2000
    epochs: int | None = 500
    batch_size: int = param(72, min=2, max=65_536)
    lr: float = 0.01
    weight_decay: float = 5e-4
    lr_gamma: float = param(0.5, min=0)
    lr_step: int = param(2000, min=0)
    alpha: float | None = param(None, min=0)
    step_size: int = param(200, min=1)
    gamma: float = param(0.005, min=0)
    power: float = param(0.5, min=0)
    init_scale: float = param(1.0, min=0)


def continuation_scale(
    iteration: int,
    step_size: int = 200,
    gamma: float = 0.005,
    power: float = 0.5,
    init_scale: float = 1.0,
) -> float:
    """beta after ``iteration`` training iterations (1-based, as the released code
    counts them): updated every ``step_size`` iterations."""
    t = step_size * (int(iteration) // step_size)
    return init_scale * math.pow(1.0 + gamma * t, power)


def hashnet_loss(h, labels_or_S, alpha: float):
    """The weighted pairwise cross-entropy of one mini-batch (torch tensors: ``h`` the
    (n, K) hash-layer outputs, ``labels_or_S`` (n,) labels or an (n, n) 0/1 similarity);
    see the module docstring for the weights and the reduction."""
    import torch
    import torch.nn.functional as F

    S = pair_similarity(labels_or_S, len(h)).to(h.device, h.dtype)
    i, j = torch.triu_indices(len(h), len(h), offset=1, device=h.device)
    ip = alpha * (h[i] * h[j]).sum(1)
    s = S[i, j]
    losses = F.softplus(ip) - s * ip
    similar = s > 0
    loss = losses.sum() * 0.0
    for group in (similar, ~similar):
        if group.any():
            loss = loss + losses[group].mean()
    return loss


class HashNet(TorchMethod):
    name = "hashnet"
    supervised = True

    Params = HashNetParams

    def configure(self):
        super().configure()
        self.alpha = 10.0 / self.bits if self.p.alpha is None else self.p.alpha
        self.scale = self.init_scale

    def _extra_state(self):
        return {"scale": np.array(self.scale, np.float64)}

    def _load_extra_state(self, state):
        self.scale = float(state["scale"])

    def _scale(self, iteration: int) -> float:
        return continuation_scale(
            iteration, self.step_size, self.gamma, self.power, self.init_scale
        )

    def _fit(self, X, y):
        import torch

        rng = seed_torch(self.seed, self.threads)
        Xt, yt = torch.from_numpy(self.norm.fit(X)(X)), torch.from_numpy(y)
        self.net = self._network(X.shape[1])
        opt = sgd(self.net, self.lr, self.momentum, self.weight_decay, nesterov=self.momentum > 0)
        sched = torch.optim.lr_scheduler.StepLR(
            opt, step_size=max(1, self.lr_step), gamma=self.lr_gamma
        )
        n, batch = len(X), min(self.batch_size, len(X))
        it = 0  # iterations so far: beta and the rate step on these, as in the released code

        def one_epoch(epoch: int) -> None:
            nonlocal it
            perm = rng.permutation(n)  # a shuffled epoch; the remainder is dropped
            for pos in range(0, n - batch + 1, batch):
                it += 1
                rows = perm[pos : pos + batch]
                self.scale = self._scale(it)
                h = torch.tanh(self.scale * self.net(Xt[rows]))
                loss = hashnet_loss(h, yt[rows], self.alpha)
                train_step(opt, loss)
                sched.step()

        self._converge(one_epoch)

    def encode(self, X):
        z = self._forward(X)
        value = np.tanh(self.scale * z.astype(np.float64)).astype(np.float32)
        return Encoded(bits=sign_bits(z, 0.0), value=value)


METHOD = HashNet
