"""Learning-rate schedules shared by the Lightning trainings (contrastive encoder, flow matching)."""

from __future__ import annotations

import math


def lr_factor(step: float, warmup: float, total: float) -> float:
    """Linear warm-up over ``warmup`` units, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if total <= warmup:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / (total - warmup))))
