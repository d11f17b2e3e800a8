"""WarmupCosineLR against torch's CosineAnnealingLR and hand-computed warm-up values."""

from __future__ import annotations

import math

import pytest
import torch

from jpegrestore.tasks.schedules import WarmupCosineLR


def _optimizer(lr=0.1):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def _trace(scheduler, steps):
    lrs = []
    for _ in range(steps):
        lrs.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return lrs


def test_without_warmup_equals_torch_cosine():
    ours = _trace(WarmupCosineLR(_optimizer(), T_max=10, eta_min=1e-3), 12)
    ref_sched = torch.optim.lr_scheduler.CosineAnnealingLR(_optimizer(), T_max=10, eta_min=1e-3)
    ref = _trace(ref_sched, 11)
    assert ours[:11] == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert ours[11] == pytest.approx(1e-3)  # held at eta_min after T_max


def test_warmup_then_cosine_hand_computed():
    lrs = _trace(WarmupCosineLR(_optimizer(0.2), T_max=8, eta_min=0.0, warmup_steps=4), 9)
    assert lrs[:4] == pytest.approx([0.05, 0.1, 0.15, 0.2])
    for step in range(4, 9):
        assert lrs[step] == pytest.approx(0.1 * (1 + math.cos(math.pi * step / 8)))


def test_state_dict_round_trip_resumes_the_schedule():
    first = WarmupCosineLR(_optimizer(), T_max=20, warmup_steps=5)
    _trace(first, 7)
    second = WarmupCosineLR(_optimizer(), T_max=20, warmup_steps=5)
    second.optimizer.load_state_dict(first.optimizer.state_dict())  # as Lightning restores both
    second.load_state_dict(first.state_dict())
    assert second.get_last_lr() == pytest.approx(first.get_last_lr())
    assert _trace(second, 3) == pytest.approx(_trace(first, 3))


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupCosineLR(_optimizer(), T_max=5, warmup_steps=-1)
    with pytest.raises(ValueError, match="T_max"):
        WarmupCosineLR(_optimizer(), T_max=0)


def test_warmup_longer_than_schedule_ends_at_eta_min():
    lrs = _trace(WarmupCosineLR(_optimizer(0.1), T_max=2, eta_min=0.01, warmup_steps=4), 6)
    assert lrs[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])
    assert lrs[4:] == pytest.approx([0.01, 0.01])
