"""DMCH: the two-stage deep metric and category-level semantic hashing network
for remote-sensing image retrieval (``shared/papers/dmch-deep-metric-category-hashing.txt``;
section and equation numbers below are that paper's).

Network (paper sec. 3.2): milan's MLP, two fully connected layers 1024-512
with LeakyReLU, then a hidden "hash" layer H of K sigmoid units, then a
classification output layer of C units on H. The code is ``f > 0.5``
(paper eq. 1); ``value`` is f (the sigmoid outputs, for the coarse-to-fine
ranking of sec. 3.5); ``class_prob`` is the softmax of the output layer
and ``predicted_label`` its argmax.

Batches and mining (sec. 3.3, 4.2): every step draws P classes and K images
of each (``classes_per_batch`` x ``images_per_class``, 3 x 30 in the
paper). Mining and the loss are separate functions, as in
pytorch-metric-learning: a miner turns the batch labels into index triplets
(a, p, n), and the triplet loss is computed on the triplets it is given.

* ``mining: batch_all`` (DMCH): every valid triplet of the batch
  (:func:`batch_all_triplets`, P K (K - 1) (P K - K) of them), and the loss
  is averaged over those whose loss is > 0 (:func:`batch_all_triplet_loss`).
* ``mining: random`` (DMCH-nBatchAll-Tri, the paper's "random triplets as
  in MiLaN"): one random positive and one random negative for every anchor
  of the same P x K batch (:func:`random_triplets`), averaged over all of
  them including the zero ones (milan's reduction). Keeping the same batch
  means this ablation changes the triplet selection only; the other three
  terms see the same images.

Objective (eq. 2-6)::

    L = L_tri + lambda L_cat + gamma L_push + alpha L_bal

* L_tri (eq. 2): ``max(0, ||f_a - f_p||^2 - ||f_a - f_n||^2 + margin)``,
  margin 0.2. With ``normalize`` (default, as in milan and the MiLaN code
  DMCH builds on) the distances are between L2-normalised f; the paper's
  eq. 2 writes the raw sigmoid outputs (``normalize: false``).
* L_cat (eq. 3): softmax cross-entropy of the output layer (``cat_weight``
  = lambda).
* L_push (eq. 4): ``-1/K ||f - 0.5||^2``, driving f towards 0 or 1
  (``push`` = gamma = 0.001, the paper's value).
* L_bal (eq. 5): ``(mean_k f_k - 0.5)^2`` (``balance`` = alpha).

Eq. 3-5 sum over the triplets' members; here L_cat, L_push and L_bal are
averaged over the P x K images of the batch (each image once, however many
triplets it is in), as milan averages its push and balance terms over the
batch. The paper gives gamma = 0.001 only; lambda and alpha are not stated,
so both default to 1 (alpha = 1 is MiLaN's balance weight).

Ablations (paper Tables 1-3; config.yaml variants) are parameters:
``use_triplet: false`` (nTri: L_tri dropped), ``mining: random``
(nBatchAll), ``use_cat: false`` (nCat: L_cat dropped; the output layer is
then untrained, so encode returns no ``class_prob`` / ``predicted_label``),
``push: 0`` (nPush) and ``balance: 0`` (nBal).

Optimiser (sec. 4.2): Adam, learning rate 1e-4, betas (0.5, 0.9). The
paper trains "until 800 epochs or convergence": ``max_epochs`` is 800, and
training stops on the split's validation part (rshash.methods.convergence); an
epoch is ceil(n / (P K)) P x K steps. (Before convergence-based training the
budget was a fixed 1500 steps, about 107 epochs on UC Merced and 22 on a
dataset of 6,000 train images; it was chosen on a validation part of the train
split (UC Merced,
dmch_60_40 split 0, 20% of each class's train images as queries against the
other 80%, 32 bits, mAP@all): 1000 steps 0.947; 1500 steps 0.961 / 0.945
(seeds 0 / 1); 2000 steps 0.954.) In the same study ``normalize`` true / false
scored 0.961 / 0.962 (seed 0) and 0.945 / 0.936 (seed 1), so the default
stays with milan's normalised embeddings. ``input_norm`` "standardize" is
the project's choice for these features (the validation study on milan),
not the paper's.

On these features the BatchAll term does its work early: from about step
800 on, most batches have no triplet with a loss > 0 (``history`` logs the
count every 100 steps) and training is driven by L_cat, L_push and L_bal
(UC Merced split 0, 32 bits, real queries: dmch 0.958 mAP@all; nTri 0.960,
nBatchAll 0.959, nPush 0.958, nBal 0.958, nCat 0.877; milan 0.931; one seed
each).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from rshash.methods.nets import (
    AdamParams,
    ClassGroups,
    MLPParams,
    TorchMethod,
    adam,
    class_head_net,
    encoded,
    sampled_steps,
    seed_torch,
    train_step,
)
from rshash.params import param

MININGS = ("batch_all", "random")


@dataclass(frozen=True, kw_only=True)
class DMCHParams(MLPParams, AdamParams):
    """The paper's settings (module docstring): P x K = 3 x 30, Adam 1e-4 betas (0.5, 0.9),
    margin 0.2, gamma (push) 0.001; lambda (cat_weight) and alpha (balance) 1; at most
    800 epochs (the paper's), stopped on the validation part."""

    max_epochs: int = 800
    classes_per_batch: int = param(3, min=2)
    images_per_class: int = param(30, min=2)
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.9)
    margin: float = param(0.2, min=0)
    cat_weight: float = param(1.0, min=0)
    push: float = param(0.001, min=0)
    balance: float = param(1.0, min=0)
    use_triplet: bool = True
    mining: Literal["batch_all", "random"] = "batch_all"
    use_cat: bool = True
    normalize: bool = True


# -- miners: labels in, index triplets out ---------------------------------------------------


def batch_all_triplets(labels):
    """Every valid triplet of a batch: (a, p, n) index tensors with a != p,
    labels[a] == labels[p] and labels[n] != labels[a] (BatchAll, paper sec. 3.3)."""
    import torch

    labels = torch.as_tensor(labels)
    same = labels[:, None] == labels[None, :]
    pos = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    valid = pos[:, :, None] & ~same[:, None, :]
    a, p, n = torch.nonzero(valid, as_tuple=True)
    return a, p, n


def random_triplets(labels, rng: np.random.Generator):
    """One triplet per anchor that has a positive and a negative in the batch: a random
    positive (same label, another image) and a random negative (another label)."""
    import torch

    y = np.asarray(torch.as_tensor(labels).cpu())
    a, p, n = [], [], []
    for i, label in enumerate(y):
        positives = np.flatnonzero((y == label) & (np.arange(len(y)) != i))
        negatives = np.flatnonzero(y != label)
        if len(positives) and len(negatives):
            a.append(i)
            p.append(positives[rng.integers(len(positives))])
            n.append(negatives[rng.integers(len(negatives))])
    return tuple(torch.as_tensor(np.asarray(t, dtype=np.int64)) for t in (a, p, n))


# -- loss terms -------------------------------------------------------------------------------


def triplet_losses(embeddings, a, p, n, margin: float):
    """Per-triplet ``max(0, ||e_a - e_p||^2 - ||e_a - e_n||^2 + margin)`` (paper eq. 2)."""
    import torch

    d = (embeddings[:, None, :] - embeddings[None, :, :]).pow(2).sum(-1)
    return torch.clamp(d[a, p] - d[a, n] + margin, min=0)


def mean_positive(losses):
    """(mean over the entries > 0, their count); 0 (still differentiable) when there are none."""
    positive = losses > 0
    count = int(positive.sum())
    if count == 0:
        return losses.sum() * 0.0, 0
    return losses[positive].sum() / count, count


def batch_all_triplet_loss(embeddings, labels, margin: float):
    """BatchAll triplet loss: over all valid triplets of the batch, the mean of the
    losses that are > 0; returns (loss, number of triplets with loss > 0)."""
    a, p, n = batch_all_triplets(labels)
    return mean_positive(triplet_losses(embeddings, a, p, n, margin))


def category_loss(logits, labels):
    """Softmax cross-entropy of the classification output layer (paper eq. 3), batch mean."""
    import torch.nn.functional as F

    return F.cross_entropy(logits, labels)


def push_loss(f):
    """``-1/K ||f - 0.5||^2``, batch mean (paper eq. 4): minimising it pushes f to 0 or 1."""
    return -(f - 0.5).pow(2).sum(1).mean() / f.shape[1]


def balance_loss(f):
    """``(mean_k f_k - 0.5)^2``, batch mean (paper eq. 5): each code half ones."""
    return (f.mean(1) - 0.5).pow(2).mean()


def dmch_loss(
    f,
    logits,
    labels,
    triplets,
    margin: float = 0.2,
    cat_weight: float = 1.0,
    push: float = 0.001,
    balance: float = 1.0,
    use_triplet: bool = True,
    use_cat: bool = True,
    only_positive: bool = True,
    normalize: bool = True,
):
    """The DMCH objective (paper eq. 6) for one batch; returns (total, terms).

    ``f`` the sigmoid hash-layer outputs, ``logits`` the output layer, ``triplets``
    the miner's (a, p, n); ``only_positive`` averages L_tri over the triplets with
    loss > 0 (BatchAll), otherwise over all of them. ``terms`` holds the unweighted
    terms (floats), ``n_triplets`` and ``n_positive`` (those with loss > 0)."""
    import torch.nn.functional as F

    total = f.sum() * 0.0
    terms = {}
    if use_triplet:
        e = F.normalize(f, dim=1, eps=1e-10) if normalize else f
        losses = triplet_losses(e, *triplets, margin)
        if only_positive:
            tri, count = mean_positive(losses)
        else:
            tri, count = losses.sum() / max(1, losses.numel()), int((losses > 0).sum())
        total = total + tri
        terms.update(tri=float(tri.detach()), n_triplets=int(losses.numel()), n_positive=count)
    if use_cat:
        cat = category_loss(logits, labels)
        total = total + cat_weight * cat
        terms["cat"] = float(cat.detach())
    if push:
        push_term = push_loss(f)
        total = total + push * push_term
        terms["push"] = float(push_term.detach())
    if balance:
        bal = balance_loss(f)
        total = total + balance * bal
        terms["bal"] = float(bal.detach())
    return total, terms


class DMCH(TorchMethod):
    name = "dmch"
    supervised = True

    Params = DMCHParams
    class_head = True
    activation = "Sigmoid"
    bit_threshold = 0.5

    @classmethod
    def head(cls, p):
        # nCat: the output layer is never trained, so encode writes no class_prob
        return p.use_cat, "use_cat: false"

    def configure(self):
        super().configure()
        self.P, self.K = self.classes_per_batch, self.images_per_class

    def _network(self, d_in: int):
        # the hash layer H of K sigmoid units, and the output layer of C units on H
        return class_head_net(super()._network(d_in), self.bits, self.n_classes)

    def _triplets(self, rng, labels):
        if self.mining == "random":
            return random_triplets(labels, rng)
        # BatchAll depends only on which batch rows share a label: mine each pattern once
        _, pattern = np.unique(labels.numpy(), return_inverse=True)
        key = pattern.tobytes()
        if key not in self._mined:
            self._mined[key] = batch_all_triplets(labels)
        return self._mined[key]

    def _fit(self, X, y):
        import torch

        rng = seed_torch(self.seed, self.threads)
        groups = ClassGroups(y, min_per_class=2)
        self.n_classes = int(y.max()) + 1
        Xt, yt = torch.from_numpy(self.norm.fit(X)(X)), torch.from_numpy(y)
        self.net = self._network(X.shape[1])
        # foreach: the same update, about 3 ms a step faster on one CPU thread
        opt = adam(self.net, self.lr, self.betas, foreach=True)
        self._mined = {}
        self.history = []  # (epoch, total, terms) of each epoch's last step
        steps = sampled_steps(len(X), self.P * self.K)

        def one_epoch(epoch: int) -> None:
            for _ in range(steps):
                rows = groups.sample(rng, self.P, self.K)
                labels = yt[rows]
                f, logits = self.net(Xt[rows])
                triplets = self._triplets(rng, labels) if self.use_triplet else None
                loss, terms = dmch_loss(
                    f,
                    logits,
                    labels,
                    triplets,
                    self.margin,
                    self.cat_weight,
                    self.push,
                    self.balance,
                    self.use_triplet,
                    self.use_cat,
                    only_positive=self.mining == "batch_all",
                    normalize=self.normalize,
                )
                train_step(opt, loss)
            self.history.append((epoch, float(loss.detach()), terms))

        self._converge(one_epoch)

    def encode(self, X):
        f, logits = self._forward(X)
        # nCat: the output layer was never trained, its outputs are not reported
        return encoded(f, self.bit_threshold, logits=logits if self.use_cat else None)


METHOD = DMCH
