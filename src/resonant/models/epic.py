"""Velocity networks of the flow-matching generators: EPiC layers for particle clouds, an MLP for the jets.

EPiC ("equivariant point cloud") layers, after Buhmann et al. (EPiC-GAN, EPiC-JeDi),
carry two representations of a cloud: a vector per particle and one global vector.
A layer

1. pools the particles into their masked mean and (scaled) masked sum and updates
   the global vector from them, the previous global vector and the context;
2. updates every particle from itself, the new global vector and the context.

Both updates are residual two-layer MLPs. The cost is linear in the number of
particles, every layer is equivariant under permutations of the particles, padded
particles (``mask`` False) never influence real ones and their outputs are 0.

The context of the velocity networks is the condition vector concatenated with a
sinusoidal embedding of the time t in [0, 1] (:func:`time_embedding`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .attention import masked_mean

#: default width of the time embedding (cosines and sines of half as many frequencies)
TIME_DIM = 32
#: scale of the summed particles in the pooling (the sum grows with the multiplicity; ~1/typical count)
SUM_SCALE = 1e-2


def time_embedding(t: torch.Tensor, dim: int = TIME_DIM, batch: int | None = None) -> torch.Tensor:
    """(B, dim) embedding [cos(w_k t), sin(w_k t)] of times ``t`` (a scalar or (B,)).

    The ``dim // 2`` frequencies w_k are spaced geometrically between 1 and 1000 rad per
    unit time, so the embedding resolves t in [0, 1] on all scales. A scalar ``t`` (as
    passed by an ODE solver) is broadcast to ``batch`` rows.
    """
    if dim < 2 or dim % 2:
        raise ValueError(f"the time embedding needs an even dimension >= 2, got {dim}")
    t = torch.as_tensor(t)
    if t.dim() == 0:
        if batch is None:
            raise ValueError("a scalar time needs the batch size")
        t = t.expand(batch)
    freqs = torch.exp(torch.linspace(0.0, math.log(1000.0), dim // 2, device=t.device, dtype=torch.float32))
    angles = t.reshape(-1, 1).to(torch.float32) * freqs
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class EPiCLayer(nn.Module):
    """One EPiC layer: global update from pooled particles, then per-particle update from the global vector.

    ``x`` (B, P, hidden) particles, ``g`` (B, global_dim) global vector, ``context``
    (B, context_dim), ``mask`` (B, P) bool. Returns the new (x, g); padded particles of
    the new ``x`` are 0.
    """

    def __init__(self, hidden: int, global_dim: int, context_dim: int, sum_scale: float = SUM_SCALE):
        super().__init__()
        self.sum_scale = float(sum_scale)
        self.global1 = nn.Linear(2 * hidden + global_dim + context_dim, hidden)
        self.global2 = nn.Linear(hidden, global_dim)
        # the first local linear map of [particle, global, context], split so the per-event part is
        # computed once per cloud instead of once per particle (the same function, P times cheaper)
        self.local1_x = nn.Linear(hidden, hidden)
        self.local1_g = nn.Linear(global_dim + context_dim, hidden, bias=False)
        self.local2 = nn.Linear(hidden, hidden)
        self.act = nn.LeakyReLU(0.01)

    def forward(self, x, g, context, mask):
        keep = mask.unsqueeze(-1).to(x.dtype)
        mean = masked_mean(x, mask)
        total = mean * keep.sum(1)
        pooled = torch.cat([mean, total * self.sum_scale, g, context], dim=-1)
        g = self.act(self.global2(self.act(self.global1(pooled))) + g)
        per_event = self.local1_g(torch.cat([g, context], dim=-1)).unsqueeze(1)
        h = self.act(self.local1_x(x) + per_event)
        x = self.act(self.local2(h) + x)
        return x * keep, g


class EPiCVelocity(nn.Module):
    """Velocity v(x_t, t, cond, mask) of a particle cloud: an input embedding, ``layers`` EPiC layers, a linear head.

    ``x`` (B, P, features), ``t`` scalar or (B,), ``cond`` (B, cond_dim), ``mask`` (B, P)
    bool. Returns (B, P, features), 0 at padded particles.
    """

    def __init__(self, features: int = 3, cond_dim: int = 5, hidden: int = 150, global_dim: int = 256,
                 layers: int = 8, time_dim: int = TIME_DIM, sum_scale: float = SUM_SCALE):
        super().__init__()
        if min(features, hidden, global_dim, layers) < 1 or cond_dim < 0:
            raise ValueError(f"EPiCVelocity: bad sizes (features {features}, cond_dim {cond_dim}, hidden {hidden}, "
                             f"global_dim {global_dim}, layers {layers})")
        self.features, self.cond_dim, self.time_dim = features, cond_dim, time_dim
        self.sum_scale = float(sum_scale)
        context = cond_dim + time_dim
        self.embed_x = nn.Linear(features, hidden)
        self.embed_context = nn.Linear(context, hidden, bias=False)
        self.embed_global = nn.Linear(2 * hidden + context, global_dim)
        self.layers = nn.ModuleList(EPiCLayer(hidden, global_dim, context, sum_scale) for _ in range(layers))
        self.head = nn.Linear(hidden, features)
        self.act = nn.LeakyReLU(0.01)

    def forward(self, x, t, cond, mask):
        if x.dim() != 3 or x.shape[-1] != self.features:
            raise ValueError(f"EPiCVelocity expects x of shape (B, P, {self.features}), got {tuple(x.shape)}")
        if mask is None or mask.shape != x.shape[:2]:
            raise ValueError(f"EPiCVelocity needs a mask of shape {tuple(x.shape[:2])}")
        context = torch.cat([cond.to(x.dtype), time_embedding(t, self.time_dim, len(x)).to(x.dtype)], dim=-1)
        keep = mask.unsqueeze(-1).to(x.dtype)
        h = self.act(self.embed_x(x) + self.embed_context(context).unsqueeze(1)) * keep
        mean = masked_mean(h, mask)
        g = self.act(self.embed_global(torch.cat([mean, mean * keep.sum(1) * self.sum_scale, context], dim=-1)))
        for layer in self.layers:
            h, g = layer(h, g, context, mask)
        return self.head(h) * keep


class MLPVelocity(nn.Module):
    """Velocity v(x_t, t, cond) of a fixed-size vector: an MLP of [x, time embedding, cond] with SiLU.

    ``layers`` hidden layers of width ``hidden``. ``mask`` is accepted for a common
    signature with :class:`EPiCVelocity` and must be None.
    """

    def __init__(self, features: int = 10, cond_dim: int = 1, hidden: int = 128, layers: int = 3,
                 time_dim: int = TIME_DIM):
        super().__init__()
        if min(features, hidden, layers) < 1 or cond_dim < 0:
            raise ValueError(f"MLPVelocity: bad sizes (features {features}, cond_dim {cond_dim}, hidden {hidden}, "
                             f"layers {layers})")
        self.features, self.cond_dim, self.time_dim = features, cond_dim, time_dim
        dims = [features + time_dim + cond_dim] + [hidden] * layers
        blocks = []
        for a, b in zip(dims[:-1], dims[1:]):
            blocks += [nn.Linear(a, b), nn.SiLU()]
        self.net = nn.Sequential(*blocks, nn.Linear(hidden, features))

    def forward(self, x, t, cond, mask=None):
        if mask is not None:
            raise ValueError("MLPVelocity models a fixed-size vector: mask must be None")
        if x.dim() != 2 or x.shape[-1] != self.features:
            raise ValueError(f"MLPVelocity expects x of shape (B, {self.features}), got {tuple(x.shape)}")
        emb = time_embedding(t, self.time_dim, len(x)).to(x.dtype)
        return self.net(torch.cat([x, emb, cond.to(x.dtype)], dim=-1))
