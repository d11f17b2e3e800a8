"""Where QGAC's DCT statistics come from: the paper recipes refuse the prior, stages 2 and 3 inherit every
component from their checkpoint and refuse a disagreeing file, the quickstart may use the prior with a warning."""

from __future__ import annotations

import logging

import pytest
import torch
from hydra.utils import instantiate

from checkpoint_helpers import write_tiny_checkpoint
from conftest import TINY, compose_train
from jpegrestore.nn.qgac import DCTStats
from jpegrestore.tasks.dct_stats import PRIOR_ORIGIN, checkpoint_dct_stats

MEASURED = DCTStats(torch.linspace(-100, 5, 192).view(3, 8, 8), torch.linspace(400, 2, 192).view(3, 8, 8))


def _measured_checkpoint(path, origin: str | None = "file measured.json"):
    """A tiny QGAC checkpoint carrying MEASURED statistics (with or without the origin entry)."""
    write_tiny_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["state_dict"]["net.stats_mean"] = MEASURED.mean.float()
    checkpoint["state_dict"]["net.stats_std"] = MEASURED.std.float()
    if origin is not None:
        checkpoint["jpegrestore"]["dct_stats"] = origin
    torch.save(checkpoint, path)
    return path


def _model(overrides, tmp_path):
    return instantiate(compose_train([*TINY, *overrides], tmp_path).model)


@pytest.mark.parametrize("experiment", ["qgac_stage1", "qgac_stage2", "qgac_stage3"])
def test_paper_recipes_refuse_the_prior_and_say_how_to_compute_stats(experiment, tmp_path):
    ckpt = _measured_checkpoint(tmp_path / "m.ckpt")
    extra = {"qgac_stage2": [f"model.y_checkpoint={ckpt}"], "qgac_stage3": [f"model.generator_checkpoint={ckpt}"]}
    with pytest.raises(Exception, match=r"python -m jpegrestore\.tasks\.dct_stats"):
        _model([f"experiment={experiment}", "dct_stats=prior", *extra.get(experiment, [])], tmp_path)


def test_stage2_refuses_a_checkpoint_that_carries_the_prior(tmp_path):
    ckpt, _ = write_tiny_checkpoint(tmp_path / "prior.ckpt")  # built without statistics: the prior
    assert checkpoint_dct_stats(ckpt)[1] == PRIOR_ORIGIN
    with pytest.raises(Exception, match="prior.ckpt carries the data-independent prior"):
        _model(["experiment=qgac_stage2", f"model.y_checkpoint={ckpt}"], tmp_path)


def test_stage2_inherits_all_components_and_checks_an_explicit_file(tmp_path):
    ckpt = _measured_checkpoint(tmp_path / "s1.ckpt")
    model = _model(["experiment=qgac_stage2", f"model.y_checkpoint={ckpt}"], tmp_path)
    assert model.net.stats.allclose(MEASURED, rtol=1e-6)  # Y, Cb and Cr
    assert model.dct_stats_origin == f"file measured.json; inherited from {ckpt}"
    MEASURED.save(tmp_path / "same.json")
    model = _model(["experiment=qgac_stage2", f"model.y_checkpoint={ckpt}", f"dct_stats={tmp_path / 'same.json'}"],
                   tmp_path)
    assert model.net.stats.allclose(MEASURED, rtol=1e-6)
    other = DCTStats(MEASURED.mean, MEASURED.std * torch.tensor([1.0, 2.0, 2.0]).view(3, 1, 1))
    other.save(tmp_path / "other.json")
    with pytest.raises(Exception, match="other.json disagrees with the DCT statistics carried by"):
        _model(["experiment=qgac_stage2", f"model.y_checkpoint={ckpt}", f"dct_stats={tmp_path / 'other.json'}"],
               tmp_path)


def test_checkpoints_without_an_origin_entry_are_judged_by_value(tmp_path):
    ckpt = _measured_checkpoint(tmp_path / "old.ckpt", origin=None)
    stats, origin = checkpoint_dct_stats(ckpt)
    assert stats.allclose(MEASURED, rtol=1e-6) and origin == f"carried by {ckpt}"


def test_stage1_with_a_file_uses_it(tmp_path):
    MEASURED.save(tmp_path / "stats.pt")
    model = _model(["experiment=qgac_stage1", f"dct_stats={tmp_path / 'stats.pt'}"], tmp_path)
    assert model.net.stats.allclose(MEASURED, rtol=1e-6)
    assert model.dct_stats_origin == f"file {tmp_path / 'stats.pt'}"


def test_quickstart_may_use_the_prior_and_says_so(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        model = _model(["experiment=quickstart", "dct_stats=prior"], tmp_path)
    assert model.net.stats.is_prior() and model.dct_stats_origin == PRIOR_ORIGIN
    assert any("dct_stats=prior" in r.getMessage() for r in caplog.records)
    model = _model(["experiment=quickstart"], tmp_path)  # the default: the sample set's measured file
    assert not model.net.stats.is_prior() and model.dct_stats_origin.endswith("qgac_dct_stats_sample.json")
