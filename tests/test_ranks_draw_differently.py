"""Two DDP ranks simulated in one process (the trainer's rank and world size set by hand): the ranks get
different training samples, and the random draws inside a training step (noise, crop offsets) differ between
ranks. All-reduce makes the weights of a real DDP run identical whatever each rank saw, so the multi-process
tests cannot show this."""

from __future__ import annotations

from types import SimpleNamespace
from unittest import mock

import torch
from hydra.utils import instantiate

from conftest import TINY, compose_train


def _first_epoch(world: int, rank: int) -> list[torch.Tensor]:
    """The training targets rank ``rank`` of ``world`` gets in epoch 0 (tiny sample-data config, 8 crops)."""
    datamodule = instantiate(compose_train([*TINY, "data.samples_per_epoch=8"]).data)
    datamodule.trainer = SimpleNamespace(world_size=world, global_rank=rank, current_epoch=0, is_global_zero=rank == 0)
    return [image for batch in datamodule.train_dataloader() for image in batch["target"]]


def test_ranks_get_different_samples_whose_union_is_the_single_process_stream():
    single = _first_epoch(1, 0)
    ranks = [_first_epoch(2, r) for r in (0, 1)]
    assert len(single) == 8 and [len(r) for r in ranks] == [4, 4]
    assert not any(torch.equal(a, b) for a in ranks[0] for b in ranks[1])
    # rank r of 2 gets samples r, r + 2, ...: together exactly the one-process epoch
    interleaved = [image for pair in zip(*ranks) for image in pair]
    assert all(torch.equal(a, b) for a, b in zip(interleaved, single))


def _at_rank(rank: int):
    from lightning.pytorch import LightningModule

    return mock.patch.object(LightningModule, "global_rank", new_callable=mock.PropertyMock, return_value=rank)


def test_step_draws_differ_between_ranks_and_repeat_on_each():
    """step_generator's noise, and the crop offsets a training step (CaVE's) draws from it."""
    from codiff_helpers import crops_seen_by_training_step
    from test_train_cave import CAVE_TINY

    model = instantiate(compose_train([*CAVE_TINY, "model.shift_prob=1.0"]).model)
    noise, offsets = [], []
    for rank in (0, 1, 1):
        with _at_rank(rank):
            noise.append(torch.randn(64, generator=model.step_generator(3, 0)))
            offsets.append(crops_seen_by_training_step(model, "encode", size=40, batches=2)[0])
    assert torch.equal(noise[1], noise[2]) and torch.equal(offsets[1], offsets[2])  # a rank repeats its draws
    assert not torch.equal(noise[0], noise[1])
    assert not torch.equal(offsets[0], offsets[1])
