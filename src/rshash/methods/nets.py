"""Building blocks shared by the deep methods: input normalisation, MLPs,
seeding, class-balanced batches, the training loop, the codes of a class head,
and persistence of a torch network.

torch is imported inside functions, so importing this module stays cheap.
A deep method subclasses :class:`TorchMethod`, builds its network in
``_network(d_in)`` (reading any sizes it needs from attributes that
``_fit`` sets and ``_extra_state`` saves) and trains it in ``_fit``; one
trained in shuffled epochs of mini-batches subclasses :class:`EpochMethod`
and gives only its loss (and, where it differs, its optimiser, scheduler,
targets or batches).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from rshash import RshashError
from rshash.methods.base import Encoded, HashMethod, sign_bits
from rshash.methods.convergence import ConvergenceParams, train_to_convergence
from rshash.params import param

INPUT_NORMS = ("none", "standardize", "l2")


# -- the training settings the torch methods share: declared once, with their ranges ----------
# A method's Params subclasses these and restates only the defaults that are its own
# (``epochs: int = 30``); the ranges declared here still apply.


@dataclass(frozen=True, kw_only=True)
class NetParams(ConvergenceParams):
    """Every torch method: its input normalisation and learning rate, and the
    convergence policy (rshash.methods.convergence; each method states max_epochs)."""

    # "standardize" (train-part mean and std) is the project's choice for these features,
    # not the papers': a validation study on milan (`rshash select`, UC Merced split 0,
    # 32 bits, validation mAP@20: standardize 0.898, none 0.853, l2 0.287)
    input_norm: Literal["none", "standardize", "l2"] = "standardize"
    lr: float = param(min=0)


@dataclass(frozen=True, kw_only=True)
class MLPParams(NetParams):
    """milan's MLP 1024-512-K with LeakyReLU (the deep methods on the same network)."""

    hidden: tuple[int, ...] = param((1024, 512), min=1, max=65_536)
    leaky_slope: float = param(0.2, min=0)


@dataclass(frozen=True, kw_only=True)
class EpochParams(NetParams):
    """Training in shuffled epochs of mini-batches; every loss here compares the rows of
    a batch (pairs, triplets, a contrastive or class term), so a batch has two or more."""

    batch_size: int = param(min=2, max=65_536)


@dataclass(frozen=True, kw_only=True)
class SGDParams(NetParams):
    """torch SGD (``sgd``)."""

    momentum: float = param(0.9, min=0, max=1)
    weight_decay: float = param(min=0)


@dataclass(frozen=True, kw_only=True)
class AdamParams(NetParams):
    """torch Adam."""

    betas: tuple[float, float] = param((0.9, 0.999), min=0, max=1)


@dataclass(frozen=True, kw_only=True)
class EpochSGDParams(MLPParams, EpochParams, SGDParams):
    """milan's MLP trained by SGD in shuffled epochs (the pairwise and class-head baselines
    on it: dpsh, dsh, dhcnn, greedyhash)."""


class Normalizer:
    """Input normalisation fitted on the train part only: ``none``,
    ``standardize`` (per-dimension mean and std) or ``l2`` (unit rows)."""

    def __init__(self, mode: str = "none"):
        if mode not in INPUT_NORMS:
            raise RshashError(f"input_norm must be one of {', '.join(INPUT_NORMS)}, got {mode!r}")
        self.mode = mode

    def fit(self, X: np.ndarray) -> Normalizer:
        d = X.shape[1]
        standardize = self.mode == "standardize"
        self.mu = X.mean(0).astype(np.float32) if standardize else np.zeros(d, np.float32)
        self.sd = (X.std(0) + 1e-6).astype(np.float32) if standardize else np.ones(d, np.float32)
        return self

    def __call__(self, X: np.ndarray) -> np.ndarray:
        X = (np.asarray(X, np.float32) - self.mu) / self.sd
        if self.mode == "l2":
            X = X / (np.linalg.norm(X, axis=1, keepdims=True) + 1e-12)
        return X.astype(np.float32)

    def state(self) -> dict:
        return {"mu": self.mu, "sd": self.sd}

    def load_state(self, state: dict) -> None:
        self.mu, self.sd = state["mu"], state["sd"]


def seed_torch(seed: int, threads: int) -> np.random.Generator:
    """Seed torch, set its thread count, and return a numpy generator with the same seed."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def mlp(d_in: int, hidden: tuple[int, ...], d_out: int, slope: float = 0.2):
    """Linear layers with LeakyReLU between them; no activation after the last."""
    import torch.nn as nn

    layers, width = [], d_in
    for h in hidden:
        layers += [nn.Linear(width, h), nn.LeakyReLU(slope)]
        width = h
    layers.append(nn.Linear(width, d_out))
    return nn.Sequential(*layers)


def class_head_net(
    encoder, bits: int, n_classes: int, bias: bool = True, head_input=None, name: str = "encoder"
):
    """``encoder`` (inputs -> the ``bits`` relaxed code units) and a linear classifier
    ``classifier`` on those units, or on ``head_input(units)`` (e.g. a sign with a
    straight-through gradient): forward returns (units, logits). The encoder is the
    attribute ``name`` (its key in the saved state); the classifier is built after it."""
    import torch.nn as nn

    class ClassHeadNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.add_module(name, encoder)
            self.classifier = nn.Linear(bits, n_classes, bias=bias)

        def forward(self, x):
            units = getattr(self, name)(x)
            return units, self.classifier(units if head_input is None else head_input(units))

    return ClassHeadNet()


def epoch_batches(rng: np.random.Generator, n: int, batch_size: int):
    """Row indices of one shuffled epoch in full batches (all rows if n < batch_size).

    Hand-written rather than a torch DataLoader so that the numpy generator
    seeded by ``seed_torch`` alone fixes the order."""
    perm = rng.permutation(n)
    steps = max(1, n // batch_size)
    return [perm[i * batch_size : (i + 1) * batch_size] for i in range(steps)]


def check_finite(loss, method: str, lr: float) -> None:
    """Stop with an error when training has diverged (u grows without bound and the
    loss overflows) rather than write codes from a broken network."""
    import torch

    if not torch.isfinite(loss):
        raise RshashError(
            f"{method}: training diverged (non-finite loss); "
            f"try a lower learning rate than lr={lr:g}"
        )


def encoded(value: np.ndarray, threshold: float = 0.0, *, logits: np.ndarray | None = None):
    """Encoded of relaxed codes ``value`` (bits: value > threshold) and, when a class
    head gives ``logits``, its softmax (in float64) as ``class_prob`` and the argmax as
    ``predicted_label``."""
    value = np.asarray(value, np.float32)
    if logits is None:
        return Encoded(bits=sign_bits(value, threshold), value=value)
    from scipy.special import softmax

    prob = softmax(np.asarray(logits, np.float64), axis=1)
    return Encoded(
        bits=sign_bits(value, threshold),
        value=value,
        class_prob=prob.astype(np.float32),
        predicted_label=prob.argmax(1).astype(np.int64),
    )


def sgd(net, lr: float, momentum: float, weight_decay: float, **kw):
    """torch SGD over the network's parameters (the optimiser of the DPSH family)."""
    import torch

    return torch.optim.SGD(
        net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay, **kw
    )


def adam(net, lr: float, betas: tuple[float, float], **kw):
    """torch Adam over the network's parameters."""
    import torch

    return torch.optim.Adam(net.parameters(), lr=lr, betas=betas, **kw)


def step_decay(opt, step_epochs: int, gamma: float = 0.1):
    """Multiply the learning rate by ``gamma`` every ``step_epochs`` epochs
    (torch StepLR); None, a constant rate, when ``step_epochs`` is 0."""
    import torch

    if step_epochs <= 0:
        return None
    return torch.optim.lr_scheduler.StepLR(opt, step_size=step_epochs, gamma=gamma)


def sampled_steps(n: int, batch: int) -> int:
    """Steps in an epoch of a sampled method (random triplets, P x K batches) that
    draws ``batch`` images a step from ``n``: ceil(n / batch)."""
    return max(1, -(-n // batch))


def train_step(opt, loss) -> None:
    """One optimiser step on ``loss``: clear the gradients, back-propagate, update."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


class ClassGroups:
    """Train rows grouped by class, for class-balanced sampling."""

    def __init__(self, y: np.ndarray, min_per_class: int = 1):
        self.classes, self.counts = np.unique(y, return_counts=True)
        if len(self.classes) < 2 or self.counts.min() < min_per_class:
            raise RshashError(
                f"needs at least two classes with {min_per_class} or more train images each"
            )
        self.order = np.argsort(y, kind="stable")
        self.starts = np.concatenate([[0], np.cumsum(self.counts)[:-1]])

    def sample(self, rng: np.random.Generator, n_classes: int, per_class: int) -> np.ndarray:
        """Row indices of ``per_class`` images of each of ``n_classes`` random classes (P x K);
        with replacement only where a class has fewer than ``per_class`` images."""
        picked = rng.choice(
            len(self.classes), size=min(n_classes, len(self.classes)), replace=False
        )
        rows = [
            self.order[
                self.starts[c]
                + rng.choice(self.counts[c], size=per_class, replace=self.counts[c] < per_class)
            ]
            for c in picked
        ]
        return np.concatenate(rows)


class TorchMethod(HashMethod):
    """A hash method whose encoder is a torch module ``self.net``, saved as numpy arrays.

    Subclasses implement ``_fit``, and ``_network(d_in)`` and ``encode`` unless the
    defaults serve: milan's MLP (MLPParams) to the K code units, then the torch.nn
    ``activation`` named; codes ``value > bit_threshold``. A ``n_classes`` attribute set in
    ``_fit`` is saved and restored, other values the network's shape depends on go in
    ``_extra_state`` / ``_load_extra_state``.
    """

    activation: str | None = None  # after the MLP: "Sigmoid", "Tanh" (torch.nn), or none
    bit_threshold = 0.0  # bits are value > bit_threshold

    def configure(self):
        self.norm = Normalizer(self.input_norm)

    def _network(self, d_in: int):
        import torch.nn as nn

        net = mlp(d_in, self.hidden, self.bits, self.leaky_slope)
        if self.activation is None:
            return net
        return nn.Sequential(net, getattr(nn, self.activation)())

    def _extra_state(self) -> dict:
        """Sizes the network depends on; the class count of class-head methods by default."""
        return {"n_classes": np.array(self.n_classes)} if hasattr(self, "n_classes") else {}

    def _load_extra_state(self, state: dict) -> None:
        if "n_classes" in state:
            self.n_classes = int(state["n_classes"])

    def _forward(self, X: np.ndarray):
        """The network on normalised inputs, without gradients, as numpy (batched)."""
        import torch

        torch.set_num_threads(self.threads)
        self.net.eval()
        with torch.inference_mode():
            outs = [
                self.net(torch.from_numpy(self.norm(X[i : i + 4096])))
                for i in range(0, len(X), 4096)
            ]
        if isinstance(outs[0], tuple):
            return tuple(torch.cat(parts).numpy() for parts in zip(*outs))
        return torch.cat(outs).numpy()

    def encode(self, X):
        """Value is the network's K-unit output and bits are value > ``bit_threshold``; a network
        that returns (units, logits) has a class head, whose softmax is reported too."""
        out = self._forward(X)
        if isinstance(out, tuple):
            value, logits = out
            return encoded(value, self.bit_threshold, logits=logits)
        return encoded(out, self.bit_threshold)

    def state(self):
        net = {f"net.{k}": v.detach().cpu().numpy() for k, v in self.net.state_dict().items()}
        return {**self.norm.state(), **self._extra_state(), **net}

    def load_state(self, state):
        import torch

        self.norm = Normalizer(self.input_norm)
        self.norm.load_state(state)
        self._load_extra_state(state)
        self.net = self._network(self.norm.mu.shape[0])
        self.net.load_state_dict(
            {k[4:]: torch.from_numpy(np.array(v)) for k, v in state.items() if k.startswith("net.")}
        )
        self.net.eval()

    # -- training to convergence (rshash.methods.convergence) ----------------------------------

    def _converge(self, one_epoch) -> None:
        """Run ``one_epoch(epoch)`` (the network in train mode) under the convergence
        policy, checked on the validation part ``fit`` was given; ends in eval mode, at
        the best check's state, with ``record`` set."""
        val = self._validation

        def epoch(e: int) -> None:
            self.net.train()
            one_epoch(e)

        self.record = train_to_convergence(
            self.p,
            epoch,
            None if val is None else self._val_score,
            self._snapshot,
            self.load_state,
            metric=None if val is None else val.metric,
            log=self._log,
        )
        self.net.eval()

    def _val_score(self) -> float:
        return self._validation.score(self, *self._fit_part)

    def _snapshot(self) -> dict:
        """A copy of the state (what the model file keeps), for ``load_state``."""
        return {k: np.array(v, copy=True) for k, v in self.state().items()}


class EpochMethod(TorchMethod):
    """A torch method trained in shuffled epochs (its Params subclass EpochParams) to
    convergence: seed, fit the normaliser, build the network, then each epoch one
    optimiser step per shuffled mini-batch (``epoch_batches``) on ``_loss(network
    output, targets of the batch's rows, n_train)`` and one scheduler step.

    A subclass gives ``_loss`` (and ``_network`` unless the MLP default serves); the
    optimiser is SGD with the parameters' momentum and weight decay (``_optimizer``),
    with no scheduler (``_scheduler``), the targets are the labels (``_targets``) and a
    batch is the normalised feature rows (``_batches``) unless it overrides these. With
    a class head (``class_head``) ``n_classes`` is set from the labels before the network
    is built; ``check_divergence`` stops training with an error on a non-finite loss."""

    check_divergence = False

    def _optimizer(self):
        return sgd(self.net, self.lr, self.momentum, self.weight_decay)

    def _scheduler(self, opt):
        return None

    def _targets(self, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """What the loss compares each train row's output with: its label."""
        return y

    def _batches(self, X):
        """Fit the normaliser on X; returns ``batch(rows) -> (network input, rows)``, the
        rows (reordered, if it needs) whose targets go with that input."""
        import torch

        Xt = torch.from_numpy(self.norm.fit(X)(X))
        return lambda rows: (Xt[rows], rows)

    def _loss(self, out, target, n_train: int):
        raise NotImplementedError

    def _fit(self, X, y):
        import torch

        rng = seed_torch(self.seed, self.threads)
        if self.class_head:
            self.n_classes = int(y.max()) + 1
        target = torch.from_numpy(self._targets(y, rng))
        batch = self._batches(X)
        self.net = self._network(X.shape[1])
        opt = self._optimizer()

        def batch_loss(rows):
            x, rows = batch(rows)
            loss = self._loss(self.net(x), target[rows], len(X))
            if self.check_divergence:
                check_finite(loss, self.name, self.lr)
            return loss

        sched = self._scheduler(opt)

        def one_epoch(epoch: int) -> None:
            for rows in epoch_batches(rng, len(X), self.batch_size):
                train_step(opt, batch_loss(rows))
            if sched is not None:
                sched.step()

        self._converge(one_epoch)
