"""DAH: deep attention hashing with distance-adaptive ranking (Zhang, Zheng and Lu,
IEEE JSTARS 2023, "Remote Sensing Image Retrieval by Deep Attention Hashing With
Distance-Adaptive Ranking"; ``shared/papers/dah-deep-attention-hashing.txt``).

Frozen-backbone version. The paper trains a CNN end to end with the
attention block on its last conv block; here the backbone is frozen and the
method reads its cached last conv maps ``g`` ([N, C, h, w], float16 on disk,
cast to float32 one mini-batch at a time; EfficientNet-Lite0 at 224 px:
C = 1280, h = w = 7).

Network (paper sec. III-A, III-B):

* channel attention (eq. 1-2): ``A_ch = sigmoid(W_2 relu(W_1 (max_hw g + avg_hw g)))``,
  ``g_ch = A_ch * g``. As eq. 1 is printed, the max- and average-pooled
  vectors are summed *before* the MLP (CBAM, ref. [41], sums the two MLP
  outputs instead). The ReLU between W_1 and W_2 and the reduction ratio
  ``reduction`` = 16 (hidden width C / 16) are CBAM's; the paper gives neither;
* spatial attention (eq. 3-4): ``A_sp = sigmoid(conv([max_c g_ch, avg_c g_ch]))``,
  ``g_sp = A_sp * g_ch``, with the 1 x 1 convolution the paper states
  (``spatial_kernel`` = 1; CBAM uses 7);
* global average pooling of g_sp, then the hash layer ``h = tanh(FC(.))``
  with K = ``bits`` units (eq. 5). The paper does not say how g_sp is
  flattened before its FC layer; global pooling keeps the layer at C x K;
* a linear softmax classifier without bias on the binary codes
  ``b = sign(h)`` (eq. 12, ``theta_j^T b``), trained with the
  straight-through estimator (sign forward, identity gradient).

``attention: false`` is the paper's DAH-A ablation: the maps are average
pooled straight into the hash layer (no attention module).

Loss (eq. 13, :func:`dah_loss`), over a mini-batch:

* ``L_w-cross`` (eq. 7-9, :func:`balanced_pair_loss`): over the pairs
  Omega = {(i, j), i < j} of the mini-batch (an image is not paired with
  itself), with ``I_ij = <h_i, h_j>``, the sum of
  ``w_ij (log(1 + exp(I_ij)) - s_ij I_ij)``, w_ij = |Omega| / |Omega_1| for
  similar pairs (same class, s_ij = 1) and |Omega| / |Omega_2| for
  dissimilar ones. ``pair_reduction`` "sum" (default) is eq. 9 as printed;
  "mean" divides it by |Omega| (the mean loss of the similar pairs plus that
  of the dissimilar pairs), the scale of the per-image means of eq. 11-12;
* ``alpha L_q`` (eq. 11, :func:`cubic_quantization_loss`): the batch mean of
  ``||h_i - sign(h_i)||_3^3 = sum_k (1 - |h_ik|)^3``;
* ``beta L_class`` (eq. 12): softmax cross-entropy of the classifier on
  the straight-through codes, batch mean.

Settings. From the paper: alpha = beta = 1 (sec. IV-G, Fig. 8); SGD with
momentum 0.9 and weight decay 0.0005, mini-batches of 36 random images, 30
epochs (sec. IV-A); the 1 x 1 spatial convolution (sec. III-A). CBAM's:
``reduction`` 16. The paper's learning rate, 0.01, is for end-to-end
training of a CNN; on frozen maps it was chosen on a validation part of
the UC Merced train rows (dmch_60_40 split 0: 12 images a class held out as
queries against the other 1,008; 32 bits; mAP@all hamming, and accuracy):

* with ``pair_reduction`` "mean", the cubic term (whose gradient is 3 per
  bit at h = 0, against a pairwise term of order 1) saturates the tanh
  outputs along their initial random directions before the pairwise and
  class terms can shape them: mAP 0.63 (lr 0.01; 0.54 at 0.001, 0.64 at
  0.05; DAH-A 0.62), though 0.94 with alpha = 0.01 or 0 - which would
  depart from the paper's alpha = 1;
* with eq. 9's sum, which makes the pairwise term the core of the loss as
  the paper describes it (sec. IV-G), the learning rate must be lower:
  lr 0.01 0.56 (DAH-A), 3e-4 0.83 (DAH-A), 1e-4 0.969 / accuracy 0.61
  (DAH-A 0.941), 5e-5 0.951 / 0.25. So lr = 1e-4. At this rate the
  classifier (which gets the beta-weighted cross-entropy only) learns
  slowly: 60 epochs gave accuracy 0.93 at the same mAP (0.969) and a
  category-weighted mAP of 0.964 against 0.968 at 30, so the paper's 30
  epochs stay (about 15 s for one UC Merced fit on one thread).

The attention maps' output layers (W_2 and the spatial convolution) start
with zero weights and bias ``gate_bias`` = 0, i.e. both maps uniform at
0.5. The paper gives no initialisation; with torch's default one, the 1 x 1
convolution on the channel max (large on these sparse maps) saturates the
spatial map towards 0 or 1 at random and training collapsed to one code
for every image (mAP 0.12, accuracy at chance; mean reduction, lr
0.01). ``gate_bias`` 3 (maps near 1) gave 0.945.

Input normalisation (``input_norm``): the maps are post-ReLU6 activations
(in [0, 6], about 90 % zeros on UC Merced). "none" feeds them as they are;
"standardize" subtracts each channel's mean and divides by its standard
deviation, both taken over the train images and all h x w positions, so
the average-pooled input is the standardized pooled feature up to a
per-channel scale (the project's choice for pooled features, a validation
study on milan). "standardize" is the default: validation mAP 0.969
against 0.929 for "none" (settings above).

Output: ``value`` = h (tanh outputs), ``bits = h > 0``; ``class_prob`` is the
softmax of the classifier applied to the codes ``sign(h)`` and
``predicted_label`` its argmax. The distance-adaptive ranking (eq. 14-16,
``category_weighted``, DAH) and plain Hamming ranking (DAH-D) are done at
evaluation time by ``rshash.rankings`` from these codes and class_prob.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from rshash import RshashError
from rshash.methods.nets import EpochMethod, EpochParams, Normalizer, SGDParams
from rshash.params import param

MAP_NORMS = ("none", "standardize")
PAIR_REDUCTIONS = ("mean", "sum")
ENCODE_BATCH = 256  # maps per forward pass in encode (256 x 1280 x 49 float32 = 64 MB)


# -- losses -----------------------------------------------------------------------------------


def balanced_pair_loss(h, y, reduction: str = "sum"):
    """Pair-balanced weighted cross-entropy L_w-cross (eq. 9) over the pairs i < j of the
    batch: ``sum w_ij (log(1 + exp(I_ij)) - s_ij I_ij)`` with ``I_ij = <h_i, h_j>`` and
    w_ij = |Omega| / |Omega_1| (similar) or |Omega| / |Omega_2| (dissimilar). ``reduction``
    "mean" divides by |Omega|: the similar pairs' mean loss plus the dissimilar pairs'.
    A kind of pair the batch lacks adds 0."""
    import torch
    import torch.nn.functional as F

    n = h.shape[0]
    if n < 2:
        raise RshashError("dah: the pairwise loss needs at least two images in a batch")
    inner = h @ h.T
    s = (y[:, None] == y[None, :]).to(h.dtype)
    iu = torch.triu_indices(n, n, offset=1, device=h.device)
    inner, s = inner[iu[0], iu[1]], s[iu[0], iu[1]]
    # log(1 + e^I) - s I, with softplus for numerical stability at large |I|
    per_pair = F.softplus(inner) - s * inner
    n_all, n_sim = float(len(s)), s.sum()
    n_dis = n_all - n_sim
    # w_ij = |Omega| / |Omega_1| or |Omega| / |Omega_2| (eq. 8)
    w = torch.where(s > 0, n_all / n_sim.clamp(min=1), n_all / n_dis.clamp(min=1))
    total = (w * per_pair).sum()
    return total if reduction == "sum" else total / n_all


def cubic_quantization_loss(h):
    """L_q (eq. 11): the batch mean of ``||h_i - sign(h_i)||_3^3``; for |h| <= 1 (tanh)
    this is ``sum_k (1 - |h_ik|)^3``."""
    return (h.abs() - 1).abs().pow(3).sum(1).mean()


def straight_through_sign(h):
    """``sign(h)`` (+1 where h > 0, else -1) forward, the identity's gradient backward."""
    import torch

    b = torch.where(h > 0, torch.ones_like(h), -torch.ones_like(h))
    return h + (b - h).detach()


def dah_loss(h, logits, y, alpha: float = 1.0, beta: float = 1.0, pair_reduction: str = "sum"):
    """The DAH objective (eq. 13) of a mini-batch: ``L_w-cross + alpha L_q + beta L_class``,
    ``h`` the (n, K) tanh outputs, ``logits`` the classifier on ``straight_through_sign(h)``
    and ``y`` the (n,) labels. Terms with weight 0 are not computed."""
    import torch.nn.functional as F

    loss = balanced_pair_loss(h, y, pair_reduction)
    if alpha:
        loss = loss + alpha * cubic_quantization_loss(h)
    if beta:
        loss = loss + beta * F.cross_entropy(logits, y)
    return loss


# -- network ----------------------------------------------------------------------------------


def _network(
    channels: int,
    height: int,
    width: int,
    bits: int,
    n_classes: int,
    attention: bool,
    reduction: int,
    spatial_kernel: int,
    gate_bias: float,
):
    import torch
    import torch.nn as nn

    class DAHNet(nn.Module):
        """Input: normalised maps in channels-last layout, [n, h * w, C] (see attend)."""

        def __init__(self):
            super().__init__()
            self.attention = attention
            if attention:
                hidden = max(1, channels // reduction)
                # W_1, W_2 of eq. 1 (the ReLU between them is CBAM's)
                self.channel_mlp = nn.Sequential(
                    nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels)
                )
                self.spatial_conv = nn.Conv2d(2, 1, spatial_kernel, padding=spatial_kernel // 2)
                # the layers that output the attention logits start at zero weights, so both
                # maps start uniform at sigmoid(gate_bias) (see DAH.configure)
                for layer in (self.channel_mlp[2], self.spatial_conv):
                    nn.init.zeros_(layer.weight)
                    nn.init.constant_(layer.bias, gate_bias)
            self.hash_layer = nn.Linear(channels, bits)  # h = tanh(F_c(.)), eq. 5
            self.classifier = nn.Linear(bits, n_classes, bias=False)  # theta, eq. 12

        def attend(self, g):
            """Global average of g_sp (eq. 1-4) for maps ``g`` [n, P, C] (P = h * w positions).

            Hand-written rather than the literal ``g_ch = A_ch * g``, ``g_sp = A_sp * g_ch``,
            ``mean(g_sp)`` (which a test checks it equals), because only the pooled g_sp is
            needed and the full-size products and their gradients dominate a training step:
            with ``A_ch`` a per-channel and ``A_sp`` a per-position factor,
            ``mean_p g_sp = A_ch * (A_sp^T g) / P`` and ``avg_c g_ch = (g A_ch) / C`` are
            matrix products, and ``max_c g_ch`` is the element at its argmax (found without
            gradient), through which the gradient reaches A_ch as the max's does."""
            n, p, c = g.shape
            a_ch = torch.sigmoid(self.channel_mlp(g.amax(1) + g.mean(1)))  # eq. 1, [n, C]
            with torch.no_grad():
                arg = (g * a_ch[:, None, :]).max(2).indices  # [n, P] (faster than argmax)
            sp_max = torch.gather(g, 2, arg[:, :, None]).squeeze(2) * torch.gather(a_ch, 1, arg)
            sp_avg = (g @ a_ch[:, :, None]).squeeze(2) / c
            maps = torch.stack([sp_max, sp_avg], 1).view(n, 2, height, width)  # eq. 3 Cat
            a_sp = torch.sigmoid(self.spatial_conv(maps)).view(n, 1, p)
            return (a_sp @ g).squeeze(1) * a_ch / p

        def forward(self, g):
            pooled = self.attend(g) if self.attention else g.mean(1)
            h = torch.tanh(self.hash_layer(pooled))
            return h, self.classifier(straight_through_sign(h))

    return DAHNet()


class MapNormalizer(Normalizer):
    """:class:`Normalizer` for conv maps [N, C, h, w]: ``none`` or per-channel
    ``standardize`` (statistics over the images and all positions)."""

    def __init__(self, mode: str = "none"):
        if mode not in MAP_NORMS:
            raise RshashError(
                f"dah: input_norm must be one of {', '.join(MAP_NORMS)}, got {mode!r}"
            )
        self.mode = mode

    def fit(self, X: np.ndarray) -> MapNormalizer:
        c = X.shape[1]
        self.mu, self.sd = np.zeros(c, np.float32), np.ones(c, np.float32)
        if self.mode == "standardize":
            # chunked float64 moments: the float16 maps are not copied to float32 at once
            s1, s2, n = np.zeros(c), np.zeros(c), 0
            for i in range(0, len(X), 128):
                part = X[i : i + 128].astype(np.float64)
                s1 += part.sum((0, 2, 3))
                s2 += np.square(part).sum((0, 2, 3))
                n += part.shape[0] * part.shape[2] * part.shape[3]
            mu = s1 / n
            self.mu = mu.astype(np.float32)
            self.sd = (np.sqrt(np.maximum(s2 / n - mu**2, 0)) + 1e-6).astype(np.float32)
        return self

    def __call__(self, X: np.ndarray):
        """Maps [n, C, h, w] (any float dtype) -> normalised float32 torch tensor [n, h * w, C]."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(X)).flatten(2).transpose(1, 2).float()
        if self.mode == "standardize":
            x = (x - torch.from_numpy(self.mu)) / torch.from_numpy(self.sd)
        return x.contiguous()


def _check_maps(X: np.ndarray, shape=None) -> None:
    if X.ndim != 4:
        raise RshashError(f"dah reads conv maps [N, C, h, w]; got an array of shape {X.shape}")
    if shape is not None and tuple(X.shape[1:]) != tuple(shape):
        raise RshashError(
            f"dah was trained on maps of shape {tuple(shape)} ([C, h, w]); got {tuple(X.shape[1:])}"
        )


@dataclass(frozen=True, kw_only=True)
class DAHParams(EpochParams, SGDParams):
    """Defaults: alpha, beta (sec. IV-G, Fig. 8); epochs (30, run without a validation
    part; with one, at most 300: 30 cannot stop), batch_size, momentum, weight_decay
    (sec. IV-A); spatial_kernel (sec. III-A: 1 x 1 convolution);
    pair_reduction "sum" (eq. 9); reduction (CBAM [41], the paper gives none);
    lr, gate_bias and input_norm chosen on a validation part of the train rows
    (module docstring)."""

    alpha: float = param(1.0, min=0)
    beta: float = param(1.0, min=0)
    attention: bool = True
    max_epochs: int = 300
    epochs: int | None = 30
    batch_size: int = 36
    lr: float = 1e-4
    weight_decay: float = 5e-4
    reduction: int = param(16, min=1)
    spatial_kernel: int = param(1, min=1)
    gate_bias: float = 0.0
    pair_reduction: Literal["mean", "sum"] = "sum"
    input_norm: Literal["none", "standardize"] = "standardize"

    def check(self):
        if self.spatial_kernel % 2 == 0:
            return "spatial_kernel", f"must be odd, got {self.spatial_kernel}"
        return None


class DAH(EpochMethod):
    name = "dah"
    supervised = True

    Params = DAHParams
    inputs = ("maps",)
    class_head = True
    check_divergence = True

    @classmethod
    def head(cls, p):
        # beta = 0: the classifier on the codes gets no gradient
        return p.beta > 0, "beta: 0"

    def configure(self):
        self.norm = MapNormalizer(self.input_norm)

    def _network(self, d_in: int):
        _, height, width = self.map_shape
        return _network(
            d_in,
            height,
            width,
            self.bits,
            self.n_classes,
            self.attention,
            self.reduction,
            self.spatial_kernel,
            self.gate_bias,
        )

    def _extra_state(self):
        return {"n_classes": np.array(self.n_classes), "map_shape": np.array(self.map_shape)}

    def _load_extra_state(self, state):
        self.n_classes = int(state["n_classes"])
        self.map_shape = tuple(int(v) for v in state["map_shape"])

    def load_state(self, state):
        # the base builds the network from mu's length (= C) with a 2-d Normalizer;
        # swap in the maps' normalizer with the same statistics
        super().load_state(state)
        self.norm = MapNormalizer(self.input_norm)
        self.norm.load_state(state)

    def _fit(self, X, y):
        _check_maps(X)
        self.map_shape = tuple(int(v) for v in X.shape[1:])
        super()._fit(X, y)

    def _batches(self, X):
        self.norm.fit(X)

        def batch(rows):
            rows = np.sort(rows)  # faster gather; the pair set does not depend on order
            return self.norm(X[rows]), rows

        return batch

    def _loss(self, out, y, n_train):
        h, logits = out
        return dah_loss(h, logits, y, self.alpha, self.beta, self.pair_reduction)

    def _forward(self, X):
        """(h, logits) as numpy for maps X, in batches of ENCODE_BATCH."""
        import torch

        X = np.asarray(X)
        _check_maps(X, self.map_shape)
        torch.set_num_threads(self.threads)
        self.net.eval()
        hs, ls = [], []
        with torch.inference_mode():
            for i in range(0, len(X), ENCODE_BATCH):
                h, logits = self.net(self.norm(X[i : i + ENCODE_BATCH]))
                hs.append(h.numpy())
                ls.append(logits.numpy())
        return np.concatenate(hs), np.concatenate(ls)


METHOD = DAH
