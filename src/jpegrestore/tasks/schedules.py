"""Learning-rate schedules configurable from Hydra (``_target_`` + kwargs, optimizer passed first)."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class WarmupCosineLR(LRScheduler):
    """Linear warm-up from ``base_lr / warmup_steps`` to ``base_lr`` over ``warmup_steps`` steps, then cosine
    annealing to ``eta_min`` at step ``T_max`` (held there afterwards). Stepped once per batch. After the
    warm-up the LR follows the same cosine curve as without warm-up (``T_max`` counts from step 0).

    With ``warmup_steps=0`` it equals ``torch.optim.lr_scheduler.CosineAnnealingLR`` (closed form).
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, warmup_steps: int = 0,
                 last_epoch: int = -1) -> None:
        if T_max <= 0 or warmup_steps < 0:
            raise ValueError(f"need T_max > 0 and warmup_steps >= 0, got T_max={T_max}, warmup_steps={warmup_steps}")
        self.T_max, self.eta_min, self.warmup_steps = int(T_max), float(eta_min), int(warmup_steps)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base_lr: float, step: int) -> float:
        """The learning rate after ``step`` scheduler steps for a group whose initial LR is ``base_lr``."""
        if step < self.warmup_steps:
            return base_lr * (step + 1) / self.warmup_steps
        progress = min(step, self.T_max) / self.T_max
        return self.eta_min + (base_lr - self.eta_min) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def get_lr(self) -> list[float]:
        return [self.lr_at(base_lr, self.last_epoch) for base_lr in self.base_lrs]


def piecewise_linear(points: list[list[float]] | list[tuple[float, float]], step: float) -> float:
    """Value at ``step`` of the curve through ``points`` ``[[step_0, value_0], [step_1, value_1], ...]`` (steps
    ascending): linear between points, constant before the first and after the last. One point: a constant."""
    if not points:
        raise ValueError("a piecewise-linear schedule needs at least one [step, value] point")
    pairs = [(float(s), float(v)) for s, v in points]
    if any(b[0] < a[0] for a, b in zip(pairs, pairs[1:])):
        raise ValueError(f"schedule steps must be ascending, got {[s for s, _ in pairs]}")
    if step <= pairs[0][0]:
        return pairs[0][1]
    for (s0, v0), (s1, v1) in zip(pairs, pairs[1:]):
        if step <= s1:
            return v1 if s1 == s0 else v0 + (v1 - v0) * (step - s0) / (s1 - s0)
    return pairs[-1][1]
