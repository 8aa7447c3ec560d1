"""The torch module a timm or OpenCLIP model becomes as a backbone (imports torch: only
the openers of rshash.backbones.timm_models and open_clip_models import this)."""

from __future__ import annotations

import torch


class StagedFeatures(torch.nn.Module):
    """A library model ``net`` as a backbone: ``pooled(x)`` (the pooled features); with
    ``capture_stages`` (set by rshash.features for the maps, layers and rot kinds)
    ``staged(x) -> (pooled, three stage maps)``, each map [N, C, h, w] passed through the
    identity ``stage0..2``, where the forward hooks read it. Subclasses give both."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.capture_stages = False
        self.stage0, self.stage1, self.stage2 = (torch.nn.Identity() for _ in range(3))

    def pooled(self, x):
        raise NotImplementedError

    def staged(self, x):
        raise NotImplementedError

    def forward(self, x):
        if not self.capture_stages:
            return self.pooled(x)
        pooled, stages = self.staged(x)
        for i, s in enumerate(stages):
            getattr(self, f"stage{i}")(s)
        return pooled
