"""The contrastive event encoder: a particle transformer with a gaussian (VAE-like) output head.

Tokens (jets and their constituents, see :mod:`resonant.contrastive`) are
embedded linearly, pass ``particle_blocks`` self-attention blocks, and a
learned class token gathers them through ``class_blocks`` class-attention
blocks. The class token gives the mean and log-variance of a
``latent_dim``-dimensional gaussian; the projection head (training only) maps
a latent vector to the unit sphere on which the contrastive loss is computed.
There is no positional encoding: the output does not depend on the order of
the tokens.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .attention import ClassAttentionBlock, SelfAttentionBlock


class ContrastiveEncoder(nn.Module):
    def __init__(self, n_features: int, latent_dim: int = 6, dim: int = 64, heads: int = 4, particle_blocks: int = 2,
                 class_blocks: int = 1, proj_dim: int = 32, dropout: float = 0.0, mlp_ratio: float = 4,
                 logvar_init: float = -4.0):
        super().__init__()
        self.latent_dim = latent_dim
        self.embed = nn.Linear(n_features, dim)
        self.blocks = nn.ModuleList(SelfAttentionBlock(dim, heads, mlp_ratio, dropout) for _ in range(particle_blocks))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.class_blocks = nn.ModuleList(ClassAttentionBlock(dim, heads, mlp_ratio, dropout)
                                          for _ in range(class_blocks))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 2 * latent_dim)
        # Start nearly deterministic (sigma = exp(logvar_init / 2) ~ 0.14): with unit noise from the first
        # step the contrastive signal drowns and the posterior collapses onto the prior. The KL term then
        # raises the variance as far as the contrast allows.
        with torch.no_grad():
            self.head.bias[latent_dim:].fill_(logvar_init)
        self.projection = nn.Sequential(nn.Linear(latent_dim, dim), nn.ReLU(), nn.Linear(dim, proj_dim))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, logvar), each (B, latent_dim), of tokens (B, T, F) with mask (B, T) (True = real token)."""
        mask = mask.bool()
        x = self.embed(tokens).masked_fill(~mask.unsqueeze(-1), 0.0)
        for block in self.blocks:
            x = block(x, mask)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        for block in self.class_blocks:
            cls = block(cls, x, mask)
        mean, logvar = self.head(self.norm(cls[:, 0])).chunk(2, dim=-1)
        return mean, logvar

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """The L2-normalised projection of latent vectors (B, latent_dim) -> (B, proj_dim)."""
        return F.normalize(self.projection(z), dim=-1)

    @staticmethod
    def reparameterise(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """z = mean + sigma * eps, eps ~ N(0, 1) (torch's global generator)."""
        return mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
