"""The point-cloud transformer classifier of the full-phase-space branches.

One event is two jet tokens and each jet's cloud of constituents:

- particles: each jet's (padded) cloud is embedded and passes ``blocks``
  self-attention blocks; the weights are shared by both jets and attention
  stays within a jet (the two jets of N events run as a batch of 2N clouds);
- jets: the two embedded jet tokens pass ``blocks`` self-attention blocks of
  their own;
- head: the particle outputs of both jets and the two jet outputs form one set
  (with its mask), then a per-token dense layer + dropout + LeakyReLU, the
  masked average over the set and a final linear layer giving one logit.

There is no positional encoding, so the logit is invariant under swapping the
two jets and under permuting the constituents of a jet; padded constituents
never influence it. Padding columns that no jet of the batch uses are dropped
before the attention (their cost would be wasted).
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import SelfAttentionBlock, masked_mean


class PCTransformer(nn.Module):
    """Logit of "class 1" for events given as jet features and per-jet particle clouds.

    ``forward(jets (B, 2, J), particles (B, 2, P, F), mask (B, 2, P))`` -> logits (B,).
    """

    def __init__(self, n_jet_features: int, n_particle_features: int, dim: int = 64, heads: int = 2, blocks: int = 4,
                 dropout: float = 0.1, mlp_ratio: float = 4):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be a multiple of heads ({heads})")
        self.particle_embed = nn.Linear(n_particle_features, dim)
        self.particle_blocks = nn.ModuleList(SelfAttentionBlock(dim, heads, mlp_ratio, dropout) for _ in range(blocks))
        self.particle_norm = nn.LayerNorm(dim)
        self.jet_embed = nn.Linear(n_jet_features, dim)
        self.jet_blocks = nn.ModuleList(SelfAttentionBlock(dim, heads, mlp_ratio, dropout) for _ in range(blocks))
        self.jet_norm = nn.LayerNorm(dim)
        self.dense = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(dropout), nn.LeakyReLU(0.01))
        self.out = nn.Linear(dim, 1)

    @staticmethod
    def _encode(x: torch.Tensor, mask: torch.Tensor, embed, blocks, norm) -> torch.Tensor:
        """Embed tokens (B, T, F), run the attention blocks, normalise; padded tokens are 0."""
        x = embed(x).masked_fill(~mask.unsqueeze(-1), 0.0)
        for block in blocks:
            x = block(x, mask)
        return norm(x).masked_fill(~mask.unsqueeze(-1), 0.0)

    def forward(self, jets: torch.Tensor, particles: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        mask = mask.bool()
        used = mask.flatten(0, 1).any(0)  # the particle slots that some jet of the batch fills
        if not bool(used.all()):
            particles, mask = particles[:, :, used], mask[:, :, used]
        b, _, p, f = particles.shape
        pmask = mask.reshape(2 * b, p)
        parts = self._encode(particles.reshape(2 * b, p, f), pmask, self.particle_embed, self.particle_blocks,
                             self.particle_norm).reshape(b, 2 * p, -1)
        jmask = torch.ones(jets.shape[:2], dtype=torch.bool, device=jets.device)
        jet_tokens = self._encode(jets, jmask, self.jet_embed, self.jet_blocks, self.jet_norm)
        tokens = torch.cat([parts, jet_tokens], dim=1)
        tmask = torch.cat([mask.reshape(b, 2 * p), jmask], dim=1)
        return self.out(masked_mean(self.dense(tokens), tmask)).squeeze(-1)
