"""PBFFN: proxy-based feature fusion network (Cai, Pan and Jin, IEEE JSTARS 2024,
"Proxy-Based Rotation Invariant Deep Metric Learning for Remote Sensing Image
Retrieval"; ``shared/papers/pbffn-proxy-rotation-invariant.txt``).

Frozen-features version. The paper fine-tunes a ResNet-50 and fuses the conv
maps of its layer2/3/4; here the backbone is frozen and the method reads the
spatially averaged outputs of three EfficientNet-Lite0 stages at strides 8,
16 and 32 (``layer0..2``, widths 40, 112, 1280) and the same stages of the
image rotated by 90, 180 and 270 degrees (``rot_layer0..2``, [N, 3, C_i]).
Each layer is normalised with its own :class:`Normalizer`, fitted on the
train rows' unrotated features.

Network (paper sec. III-A, Fig. 1-2), with every 1x1 convolution on a pooled
vector becoming a fully connected layer:

* projection: ``L_i = W_i x_i`` to a common ``width`` (the 1x1 convolutions
  that give the three layers the same channel count);
* global correlation (eq. 1): bilinear up-sampling is the identity on pooled
  vectors and the layer- then global-average pooling reduces to the mean, so
  ``M = (L_0 + L_1 + L_2) / 3`` - a global correlation *vector*;
* feature decomposition (eq. 2): a gate vector per layer,
  ``W_h = sigmoid(BN(FC([L_i, M])))``, ``W_l = 1 - W_h``,
  ``F_h = W_h * L_i``, ``F_l = W_l * L_i``;
* feature update (Fig. 2(c)): for the deepest layer, ``F_l`` through an FC
  layer and ``F_h`` through a ReLU, concatenated, then squeeze-and-excitation
  (FC - ReLU - FC - sigmoid, reduction ``se_reduction``; the global average
  pool is the identity here) gives channel weights ``W``;
  ``N_h = W * F_h``, ``N_l = W * F_l``. For the two shallower layers ``F_l``
  is first replaced by ``FC([F_l, N_l of the next deeper layer])`` and, "the
  same operation", ``F_h`` by ``FC([F_h, N_h of the next deeper layer])``;
  the low-relevance features thus carry information between layers and
  reach the output only through the SE weights, and are then discarded;
* fused features (eq. 3) ``F_m = [N_h0, N_h1, N_h2]`` (up-sampling is the
  identity), an FC embedding layer of size K = ``bits`` (the paper's
  embedding size, 32 / 64 / 128 / 256 in its Table I), and a classification
  layer (FC, K -> C) on the embedding for the cross-entropy branch.

Loss (sec. III-B), ``L = lambda L_PEDC + xi L_CE`` with
``L_PEDC = L_PED + delta L_C`` (eq. 9-10; :func:`pbffn_loss`):

* ``L_PED`` (eq. 5-6, :func:`ped_loss`): softmax cross-entropy over
  ``-alpha ||f - p_c||^2`` for one learnable proxy ``p_c`` per class,
  initialised at the class centroid of the embeddings of the initial network
  (sec. IV-A); batch mean;
* ``L_C`` (eq. 7-8, :func:`rotation_contrastive_loss`): for each image x_i of
  the batch and its rotated view (one of the three rotations drawn at random
  for every image and step), ``-log(exp(S_ii / tau) / sum_{n != i}
  exp(S_in / tau))`` with S the cosine similarity between the embedding of
  x_i and those of the rotated views in the batch. As in eq. 8 the
  denominator leaves the positive out (the "decoupled" form of the InfoNCE
  loss of SimCLR / MoCo, refs. [45], [46]), so a term can be negative;
* ``L_CE``: cross-entropy of the classification layer.

Only the unrotated images enter L_PED and L_CE (the paper's X); the
rotated views enter L_C only. ``rotation_weight`` = delta; 0 drops L_C
exactly (the pbffn_nrot ablation, "ours (without L_C)") and the rotated
arrays are then not needed.

Settings from the paper (sec. IV-A): lambda, xi, delta = 0.5, 1, 1
(``ped_weight``, ``ce_weight``, ``rotation_weight``), Adam lr 5e-4 with
betas (0.9, 0.999), the learning rate halved every 30 epochs
(``lr_step_epochs``, ``lr_gamma``), batch size 32; the embedding size is
``bits`` (128 in the paper). The paper gives no value for alpha, tau, the
fusion width or the number of epochs. They were chosen on a validation part
of the UC Merced dmch_60_40 split-0 train rows (12 images a class held out
as queries against the other 1,008, 128 bits, two seeds): ``alpha`` = 10
(1 and 0.1 about 0.04 lower in mAP; 30 and 100 no better), ``tau`` = 0.7
(0.1 collapses, mAP 0.41; 0.5 about 0.015 lower; 0.7 and 1 equal within
seed noise, 0.7 keeping the rotated copies closer: rotation_top3 +0.03;
2 lower), ``width`` = 128 (256 about 0.005 better at twice the time),
``epochs`` = 30 (10-20 slightly lower, 40-60 lower: the losses reach ~0
within 10 epochs and the fit overfits). Trained to convergence now
(rshash.methods.convergence): at most 400 epochs, and the state of the best
validation check is kept, which is what guards against that overfitting.
``se_reduction`` = 4 is not tuned.
``input_norm`` "standardize" is the project's choice for these features
(the validation study on milan).

Output: ``value`` is the real-valued embedding minus a per-dimension
threshold (ranked ``euclidean``, which a constant shift leaves unchanged:
"PBFFN real-valued"), ``bits = value > 0`` (ranked ``hamming``:
binarized). With ``threshold: "zero"`` (default) the threshold is 0, plain
sign, which is not degenerate here (on UC Merced every bit is 1 for 40-62 %
of the database at 32-128 bits, and the validation mAP of the median was
not higher); ``"median"`` takes the train embeddings' per-dimension median
so that every bit splits the train part in half. ``class_prob`` is the
proxy softmax of eq. 5 (not the CE branch: the paper's class probability,
on the retrieval metric space), ``predicted_label`` its argmax.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from rshash import RshashError
from rshash.methods.nets import (
    AdamParams,
    EpochParams,
    Normalizer,
    TorchMethod,
    adam,
    encoded,
    epoch_batches,
    seed_torch,
    train_step,
)
from rshash.params import param

N_LAYERS = 3
THRESHOLDS = ("median", "zero")


# -- losses -----------------------------------------------------------------------------------


def proxy_logits(f, proxies, alpha: float):
    """``-alpha ||f_i - p_c||^2`` for every row and proxy: (n, C) (paper eq. 5's exponent)."""
    return -alpha * (f[:, None, :] - proxies[None, :, :]).pow(2).sum(-1)


def ped_loss(f, proxies, labels, alpha: float):
    """Proxy-based Euclidean distance loss L_PED (paper eq. 6), batch mean."""
    import torch.nn.functional as F

    return F.cross_entropy(proxy_logits(f, proxies, alpha), labels)


def rotation_contrastive_loss(f, f_rot, tau: float):
    """L_C (paper eq. 7-8): mean over i of ``-S_ii / tau + log sum_{n != i} exp(S_in / tau)``,
    S the cosine similarity between ``f`` (the images) and ``f_rot`` (their rotated views)."""
    import torch
    import torch.nn.functional as F

    # hand-written: eq. 8 leaves the positive out of the denominator, which the InfoNCE /
    # NT-Xent losses of torch-based libraries do not
    n = f.shape[0]
    if n < 2:
        raise RshashError("pbffn: the rotation contrastive loss needs at least two images")
    s = F.normalize(f, dim=1) @ F.normalize(f_rot, dim=1).T / tau
    diag = torch.eye(n, dtype=torch.bool, device=f.device)
    negatives = torch.logsumexp(s.masked_fill(diag, float("-inf")), dim=1)
    return (negatives - s.diagonal()).mean()


def pbffn_loss(
    f,
    logits,
    proxies,
    labels,
    f_rot=None,
    alpha: float = 10.0,
    tau: float = 0.7,
    ped_weight: float = 0.5,
    ce_weight: float = 1.0,
    rotation_weight: float = 1.0,
):
    """``lambda (L_PED + delta L_C) + xi L_CE`` (paper eq. 9-10); returns (total, terms).

    L_C is computed only when ``rotation_weight`` (delta) is non-zero; it then
    needs ``f_rot``, the embeddings of the rotated views of the rows of ``f``."""
    import torch.nn.functional as F

    ped = ped_loss(f, proxies, labels, alpha)
    ce = F.cross_entropy(logits, labels)
    pedc = ped
    terms = {"ped": float(ped.detach()), "ce": float(ce.detach())}
    if rotation_weight:
        if f_rot is None:
            raise RshashError("pbffn: rotation_weight > 0 needs the rotated views' embeddings")
        lc = rotation_contrastive_loss(f, f_rot, tau)
        pedc = ped + rotation_weight * lc
        terms["c"] = float(lc.detach())
    return ped_weight * pedc + ce_weight * ce, terms


# -- network ----------------------------------------------------------------------------------


def _network(widths, width: int, bits: int, n_classes: int, se_reduction: int):
    import torch
    import torch.nn as nn

    def se(d_in, d_out):
        hidden = max(1, d_in // se_reduction)
        return nn.Sequential(
            nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out), nn.Sigmoid()
        )

    class PBFFNNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.project = nn.ModuleList(nn.Linear(c, width) for c in widths)
            self.gate = nn.ModuleList(
                nn.Sequential(nn.Linear(2 * width, width), nn.BatchNorm1d(width), nn.Sigmoid())
                for _ in widths
            )
            self.low = nn.ModuleList(nn.Linear(width, width) for _ in widths)
            self.se = nn.ModuleList(se(2 * width, width) for _ in widths)
            # the shallower layers' update with the next deeper layer's N_l / N_h
            self.link_low = nn.ModuleList(nn.Linear(2 * width, width) for _ in widths[1:])
            self.link_high = nn.ModuleList(nn.Linear(2 * width, width) for _ in widths[1:])
            self.embed = nn.Linear(len(widths) * width, bits)
            self.classifier = nn.Linear(bits, n_classes)
            self.proxies = nn.Parameter(torch.zeros(n_classes, bits))

        def fused(self, xs):
            L = [p(x) for p, x in zip(self.project, xs)]
            M = torch.stack(L).mean(0)  # eq. 1 on pooled vectors
            n_high, n_low = [None] * len(L), None
            for i in reversed(range(len(L))):  # deepest first
                w_h = self.gate[i](torch.cat([L[i], M], 1))  # eq. 2
                f_h, f_l = w_h * L[i], (1 - w_h) * L[i]
                if n_low is not None:  # a shallower layer: update with the deeper one
                    f_l = self.link_low[i](torch.cat([f_l, n_low], 1))
                    f_h = self.link_high[i](torch.cat([f_h, n_high[i + 1]], 1))
                w = self.se[i](torch.cat([self.low[i](f_l), torch.relu(f_h)], 1))
                n_high[i], n_low = w * f_h, w * f_l
            return torch.cat(n_high, 1)  # eq. 3

        def forward(self, xs):
            f = self.embed(self.fused(xs))
            return f, self.classifier(f)

    return PBFFNNet()


@dataclass(frozen=True, kw_only=True)
class PBFFNParams(EpochParams, AdamParams):
    """The paper's settings (sec. IV-A) and those chosen on a validation part of the
    train rows (alpha, tau, width, epochs; module docstring). ``epochs`` 100 without a
    validation part; with one, at most 400."""

    max_epochs: int = 400
    epochs: int | None = 100
    batch_size: int = 32
    lr: float = 5e-4
    lr_step_epochs: int = param(30, min=1)
    lr_gamma: float = param(0.5, min=0)
    ped_weight: float = param(0.5, min=0)
    ce_weight: float = param(1.0, min=0)
    rotation_weight: float = param(1.0, min=0)
    alpha: float = param(10.0, min=0)
    tau: float = param(0.7, min=0)
    width: int = param(128, min=1)
    se_reduction: int = param(4, min=1)
    threshold: Literal["median", "zero"] = "zero"


class PBFFN(TorchMethod):
    name = "pbffn"
    supervised = True

    Params = PBFFNParams
    inputs = ("layers", "rot")
    class_head = True

    @classmethod
    def head(cls, p):
        # class_prob is the proxy softmax: without L_PED the proxies are not trained
        return p.ped_weight > 0, "ped_weight: 0"

    # -- inputs and state ----------------------------------------------------------------------

    def _layers(self, X, prefix: str = "") -> list[np.ndarray]:
        if not isinstance(X, dict):
            raise RshashError(
                "pbffn reads a dict of layer0..2 (and rot_layer0..2 to fit), "
                f"got {type(X).__name__}"
            )
        missing = [f"{prefix}layer{i}" for i in range(N_LAYERS) if f"{prefix}layer{i}" not in X]
        if missing:
            raise RshashError(f"pbffn: input lacks {', '.join(missing)}")
        return [np.asarray(X[f"{prefix}layer{i}"], dtype=np.float32) for i in range(N_LAYERS)]

    def _network(self, d_in=None):
        return _network(self.widths, self.width, self.bits, self.n_classes, self.se_reduction)

    def state(self):
        net = {f"net.{k}": v.detach().cpu().numpy() for k, v in self.net.state_dict().items()}
        norms = {f"norm{i}.{k}": v for i, n in enumerate(self.norms) for k, v in n.state().items()}
        return {**norms, **self._extra_state(), **net}

    def _extra_state(self):
        return {
            "widths": np.array(self.widths, dtype=np.int64),
            "n_classes": np.array(self.n_classes),
            "thresholds": self.thresholds,
        }

    def load_state(self, state):
        import torch

        self.widths = tuple(int(w) for w in state["widths"])
        self.n_classes = int(state["n_classes"])
        self.thresholds = np.asarray(state["thresholds"], dtype=np.float32)
        self.norms = []
        for i in range(N_LAYERS):
            norm = Normalizer(self.input_norm)
            norm.load_state({k: state[f"norm{i}.{k}"] for k in ("mu", "sd")})
            self.norms.append(norm)
        self.net = self._network()
        self.net.load_state_dict(
            {k[4:]: torch.from_numpy(np.array(v)) for k, v in state.items() if k.startswith("net.")}
        )
        self.net.eval()

    # -- training ------------------------------------------------------------------------------

    def _fit(self, X, y):
        import torch

        rng = seed_torch(self.seed, self.threads)
        layers = self._layers(X)
        use_rot = self.rotation_weight != 0
        rot = self._layers(X, "rot_") if use_rot else None
        n = len(y)
        if any(len(a) != n for a in layers + (rot or [])):
            raise RshashError("pbffn: layer arrays and labels differ in length")
        if use_rot and any(r.ndim != 3 or r.shape[1] != 3 for r in rot):
            raise RshashError("pbffn: rot_layer arrays must be [N, 3, C] (90/180/270 degrees)")
        self.n_classes = int(y.max()) + 1
        if len(np.unique(y)) < 2:
            raise RshashError("pbffn needs at least two classes")
        self.widths = tuple(a.shape[1] for a in layers)
        self.norms = [Normalizer(self.input_norm).fit(a) for a in layers]
        Xt = [torch.from_numpy(nm(a)) for nm, a in zip(self.norms, layers)]
        # rotated views normalised with the unrotated layers' statistics: [N, 3, C]
        Rt = (
            [
                torch.from_numpy(nm(r.reshape(-1, r.shape[2])).reshape(r.shape))
                for nm, r in zip(self.norms, rot)
            ]
            if use_rot
            else None
        )
        yt = torch.from_numpy(y)
        self.net = self._network()
        self.net.train()
        with torch.no_grad():  # proxies at the class centroids of the initial embeddings
            f0, _ = self.net(Xt)
            centroids = torch.zeros(self.n_classes, self.bits).index_add_(0, yt, f0)
            counts = torch.bincount(yt, minlength=self.n_classes).clamp(min=1)
            self.net.proxies.copy_(centroids / counts[:, None])
        opt = adam(self.net, self.lr, self.betas, foreach=True)
        sched = torch.optim.lr_scheduler.StepLR(opt, self.lr_step_epochs, self.lr_gamma)
        self.history = []  # (epoch, mean total loss, last batch's terms)
        self.thresholds = np.zeros(self.bits, np.float32)

        def one_epoch(epoch: int) -> None:
            total = 0.0
            batches = epoch_batches(rng, n, self.batch_size)
            for rows in batches:
                b = len(rows)
                xs = [x[rows] for x in Xt]
                if use_rot:
                    r = torch.from_numpy(rng.integers(0, 3, size=b))
                    rows_t = torch.from_numpy(rows)
                    xs = [torch.cat([x, rt[rows_t, r]]) for x, rt in zip(xs, Rt)]
                f, logits = self.net(xs)
                loss, terms = pbffn_loss(
                    f[:b],
                    logits[:b],
                    self.net.proxies,
                    yt[rows],
                    f[b:] if use_rot else None,
                    self.alpha,
                    self.tau,
                    self.ped_weight,
                    self.ce_weight,
                    self.rotation_weight,
                )
                train_step(opt, loss)
                total += float(loss.detach())
            sched.step()
            self.history.append((epoch, total / len(batches), terms))

        self._converge(one_epoch)
        self._set_thresholds(X)

    def _set_thresholds(self, X) -> None:
        """Per-bit thresholds: the fit part's median embedding, or zero."""
        if self.threshold == "median":
            self.thresholds = np.median(self._embed(X)[0], 0).astype(np.float32)
        else:
            self.thresholds = np.zeros(self.bits, np.float32)

    def _val_score(self) -> float:
        self._set_thresholds(self._fit_part[0])  # the codes as encode would give them now
        return super()._val_score()

    # -- encoding ------------------------------------------------------------------------------

    def _embed(self, X):
        """(embeddings, proxy logits) of the unrotated layers of X, without gradients."""
        import torch

        layers = self._layers(X)
        torch.set_num_threads(self.threads)
        self.net.eval()
        fs, ps = [], []
        with torch.inference_mode():
            for i in range(0, len(layers[0]), 4096):
                xs = [torch.from_numpy(nm(a[i : i + 4096])) for nm, a in zip(self.norms, layers)]
                f, _ = self.net(xs)
                fs.append(f)
                ps.append(proxy_logits(f, self.net.proxies, self.alpha))
        return torch.cat(fs).numpy(), torch.cat(ps).double().numpy()

    def encode(self, X):
        emb, logits = self._embed(X)
        return encoded(emb - self.thresholds, logits=logits)


METHOD = PBFFN
