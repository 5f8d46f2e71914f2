"""Transformer blocks over sets of tokens with a padding mask (no positional encoding).

Shared by the point-cloud models: the contrastive encoder and the particle
classifiers. A mask is a bool tensor (batch, tokens), True for real tokens;
padded tokens never influence real ones, and every block is equivariant (the
class-attention block invariant) under permutations of the tokens.
"""

from __future__ import annotations

import torch
from torch import nn


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` (B, T, D) over the valid tokens of ``mask`` (B, T); 0 for an event without any."""
    w = mask.to(x.dtype).unsqueeze(-1)
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


def _key_padding(mask: torch.Tensor) -> torch.Tensor:
    """The ``key_padding_mask`` of ``nn.MultiheadAttention`` (True = ignore).

    An event without any valid token attends to all of them instead of producing NaN
    (its outputs are meaningless and masked downstream).
    """
    pad = ~mask
    empty = pad.all(1, keepdim=True)
    return pad & ~empty


def _mlp(dim: int, mlp_ratio: float, dropout: float) -> nn.Sequential:
    hidden = int(dim * mlp_ratio)
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim),
                         nn.Dropout(dropout))


class _AttentionBlock(nn.Module):
    """The layers of a pre-LayerNorm attention block: norm, multi-head attention, norm, MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _mlp(dim, mlp_ratio, dropout)


class SelfAttentionBlock(_AttentionBlock):
    """Pre-LayerNorm transformer block: x + MHA(LN(x)), then x + MLP(LN(x)); padded outputs set to 0."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        a, _ = self.attn(h, h, h, key_padding_mask=_key_padding(mask), need_weights=False)
        x = x + self.drop(a)
        x = x + self.mlp(self.norm2(x))
        return x.masked_fill(~mask.unsqueeze(-1), 0.0)


class ClassAttentionBlock(_AttentionBlock):
    """CaiT class attention: the class token (B, 1, D) attends over [class token, tokens]; only it is updated."""

    def forward(self, cls: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        u = self.norm1(torch.cat([cls, x], dim=1))
        keep = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
        a, _ = self.attn(u[:, :1], u, u, key_padding_mask=~keep, need_weights=False)
        cls = cls + self.drop(a)
        return cls + self.mlp(self.norm2(cls))
