"""Sharded streaming data: shards written from a folder (bad files included), split per rank, bad records skipped
and counted by reason, exact resume from a saved position, and training from shards through train.py."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY, compose_train
from jpegrestore.data import ChoiceQuality
from jpegrestore.data.shards import ShardedSource, StreamingCropDataset, write_shards
from jpegrestore.tasks.runner import build
from test_data import bad_folder  # noqa: F401  (fixture: 2 good files and one per skip reason, crop 32)

OPTIONS = dict(crop_size=32, quality=ChoiceQuality([10, 50]), misalign_prob=0.5, seed=3)


@pytest.fixture()
def shards(tmp_path, bad_folder):  # noqa: F811
    folder, _ = bad_folder
    rng = np.random.default_rng(0)
    for k in range(6):
        Image.fromarray(rng.integers(0, 256, (48, 56, 3), dtype=np.uint8)).save(folder / f"good{k}.png")
    out = tmp_path / "shards"
    paths = write_shards(folder, out, per_shard=4, seed=1, progress=False)
    return out, len(paths)


def _dataset(out, samples, rank=0, world=1, epoch=0):
    return StreamingCropDataset(ShardedSource(str(out / "*.parquet")), samples, rank=rank, world_size=world,
                                epoch=epoch, **OPTIONS)


def _records(dataset, passes=0):
    return [record for path in dataset.shards_for(passes) for _, record in dataset.source.read(path)]


def _names(out, rank, world):
    return [record["name"] for record in _records(_dataset(out, 1, rank, world))]


def test_shards_hold_every_file_and_ranks_split_them(shards):
    out, count = shards
    assert count == 4  # 14 files (8 good, 6 bad), 4 per shard
    everything = _names(out, 0, 1)
    assert len(everything) == 14 and len(set(everything)) == 14
    rank0, rank1 = _names(out, 0, 2), _names(out, 1, 2)
    assert set(rank0).isdisjoint(rank1) and sorted(rank0 + rank1) == sorted(everything)


def test_bad_records_are_skipped_and_counted(shards):
    out, _ = shards
    dataset = _dataset(out, 8)
    samples = list(dataset)
    assert len(samples) == 8 and all(s["target"].shape == (3, 32, 32) for s in samples)
    dataset = _dataset(out, 8)
    usable = [dataset._decode(record) is not None for record in _records(dataset)]  # one full pass
    assert sum(usable) == 8
    counts = dataset.counts.counts()
    assert counts == {"not an image": 1, "corrupt": 1, "truncated": 1, "cmyk": 1, "16-bit": 1,
                      "smaller than crop": 1}, counts
    assert dataset.counts.summary().startswith("skipped 6 of 14 records read from shards:")


def test_each_rank_yields_its_share_and_cycles(shards):
    out, _ = shards
    assert len(list(_dataset(out, 20, rank=1, world=2))) == 10  # more than its good records: cycles


def test_resume_from_state_dict_continues_exactly(shards):
    out, _ = shards
    full = list(_dataset(out, 12, epoch=2))
    first = _dataset(out, 12, epoch=2)
    iterator = iter(first)
    head = [next(iterator) for _ in range(5)]
    state = first.state_dict()
    resumed = _dataset(out, 12, epoch=2)
    resumed.load_state_dict(state)
    tail = list(resumed)
    assert len(head) + len(tail) == len(full) == 12
    for a, b in zip(head + tail, full):
        assert torch.equal(a["target"], b["target"]) and int(a["quality"]) == int(b["quality"])
    with pytest.raises(ValueError, match="epoch"):
        _dataset(out, 12, epoch=3).load_state_dict(state)


def test_errors_name_the_problem(tmp_path, shards):
    out, _ = shards
    with pytest.raises(FileNotFoundError, match="no shard files match"):
        ShardedSource(str(tmp_path / "nothing" / "*.parquet"))
    with pytest.raises(ValueError, match="samples_per_epoch"):
        _dataset(out, None)
    with pytest.raises(ValueError, match="4 shard\\(s\\) for 2 rank\\(s\\) x 4 worker"):
        _dataset(out, 8, world=2).shards_for(0, 0, 4)


SHARDED = [*TINY, "experiment=qgac_stage1", "data=shards", "data.samples_per_epoch=8",
           "data.val_source=sample:val", "trainer.val_check_interval=3", "model.scheduler.step_size=3"]


def _fit(out_dir, shard_dir, max_steps, ckpt_path=None):
    cfg = compose_train([*SHARDED, f"data.train_source.data_files={shard_dir}/*.parquet",
                         f"trainer.max_steps={max_steps}"], out_dir)
    datamodule, model, trainer = build(cfg)
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return datamodule, model


def test_train_from_shards_and_resume_midepoch(tmp_path, shards):
    shard_dir, _ = shards
    datamodule, full = _fit(tmp_path / "full", shard_dir, 6)  # 4 steps per epoch: step 3 is mid-epoch
    import re

    assert re.search(r"train: skipped \d+ of \d+ records read from shards:", datamodule.skip_summary())
    _fit(tmp_path / "first", shard_dir, 3)
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 3
    _, resumed = _fit(tmp_path / "resumed", shard_dir, 6, str(last))
    for key, value in full.net.state_dict().items():
        assert torch.equal(value, resumed.net.state_dict()[key]), key


def test_workers_share_the_stream_and_resume(shards):
    """Two DataLoader workers (each reads its own shards) yield the rank's share; a loader restored from a
    mid-epoch state_dict yields exactly the remaining batches."""
    from torchdata.stateful_dataloader import StatefulDataLoader

    from jpegrestore.data import collate

    out, _ = shards

    def loader():
        return StatefulDataLoader(_dataset(out, 12), batch_size=2, num_workers=2, collate_fn=collate)

    full = [b["target"] for b in loader()]
    assert len(full) == 6
    first = loader()
    iterator = iter(first)
    head = [next(iterator)["target"] for _ in range(3)]
    state = first.state_dict()
    resumed = loader()
    resumed.load_state_dict(state)
    tail = [b["target"] for b in resumed]
    assert len(head) + len(tail) == 6
    for a, b in zip(head + tail, full):
        assert torch.equal(a, b)


def test_command_line_writer(tmp_path, capsys):
    from jpegrestore.data.shards import main

    folder = tmp_path / "images"
    folder.mkdir()
    for k in range(3):
        Image.fromarray(np.full((40, 40, 3), 40 * k, np.uint8)).save(folder / f"{k}.png")
    assert main([str(folder), str(tmp_path / "out"), "--per-shard", "2"]) == 0
    assert "wrote 2 shards" in capsys.readouterr().out
    source = ShardedSource(str(tmp_path / "out"))
    assert sum(source.rows(path) for path in source.files) == 3


def test_shard_order_is_drawn_anew_each_epoch_and_pass(shards):
    """Each epoch (and each further pass within one) reads every shard, in an order drawn from (seed, epoch,
    pass): the same again for the same epoch, different from one epoch to the next."""
    out, count = shards
    orders = [tuple(_dataset(out, 1, epoch=epoch).shards_for(0)) for epoch in range(4)]
    assert all(sorted(order) == sorted(orders[0]) and len(order) == count for order in orders)
    assert tuple(_dataset(out, 1, epoch=2).shards_for(0)) == orders[2]
    assert all(a != b for a, b in zip(orders, orders[1:]))  # 24 possible orders; with this seed all 4 differ
    assert tuple(_dataset(out, 1, epoch=0).shards_for(1)) != orders[0]
