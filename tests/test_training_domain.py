"""Checkpoints record the qualities and layouts they were trained on; restore and evaluate estimate each file's
quality from its tables and warn about, pass through, or run files outside that range."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from jpegrestore import jpeg
from jpegrestore.data.quality import CODiffQuality, ChoiceQuality, UniformQuality
from jpegrestore.evaluation.domain import DomainGuard, TrainingDomain, guard
from checkpoint_helpers import write_tiny_checkpoint


def _pillow_tables(quality: int, subsampling: int = 2) -> torch.Tensor:
    """[1, 2, 8, 8] tables Pillow/libjpeg writes at ``quality`` (read back from the file)."""
    import skimage.data

    buffer = io.BytesIO()
    Image.fromarray(skimage.data.astronaut()[:32, :32]).save(buffer, "JPEG", quality=quality, subsampling=subsampling)
    buffer.seek(0)
    with Image.open(buffer) as image:
        tables = image.quantization
    return torch.tensor([tables[0], tables[1]], dtype=torch.float32).reshape(1, 2, 8, 8)


@pytest.mark.parametrize("quality", [1, 7, 10, 33, 50, 51, 75, 95, 100])
def test_estimate_quality_recovers_what_libjpeg_wrote(quality):
    estimate = jpeg.estimate_quality(_pillow_tables(quality))
    # q=100 and q=99 share no table, but several low qualities can; the estimate must reproduce the tables.
    assert torch.equal(jpeg.quant_tables(estimate.quality), _pillow_tables(quality).reshape(1, 2, 8, 8))
    assert bool(estimate.exact)


def test_estimate_quality_of_custom_tables_is_nearest_and_not_exact():
    tables = jpeg.quant_tables(40).clone()
    tables[0, 0, 0, 0] += 1  # one entry off
    estimate = jpeg.estimate_quality(tables)
    assert int(estimate.quality) == 40 and not bool(estimate.exact)
    coarser = (jpeg.quant_tables(20) * 1.1).round()  # 10% coarser than QF 20: IJG scale 250 -> 275, QF ~18
    assert int(jpeg.estimate_quality(coarser).quality) == 18
    with pytest.raises(ValueError, match=r"\[B, C, 8, 8\]"):
        jpeg.estimate_quality(torch.ones(8, 8))


def test_quality_sampler_support():
    assert UniformQuality(10, 12).support() == [10, 11, 12]
    assert ChoiceQuality([30, 10, 30]).support() == [10, 30]
    support = CODiffQuality().support()
    assert support[0] == 8 and support[-1] == 96


def _coeffs(quality, subsampling="4:2:0"):
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    return jpeg.encode(image, quality=quality, subsampling=subsampling, rounding="exact")


class _Plus:
    name = "plus"

    def __call__(self, coeffs, jpeg_image):
        return jpeg_image + 1


def test_guard_policies():
    domain = TrainingDomain(10, 10, ("4:2:0",))
    inside, outside = _coeffs(10), _coeffs(50)
    image = torch.zeros(1, 3, 16, 16)
    with pytest.warns(UserWarning, match="quality about 50.*QF 10, 4:2:0.*restored anyway"):
        assert torch.equal(DomainGuard(_Plus(), domain, "warn")(outside, image), image + 1)
    skip = DomainGuard(_Plus(), domain, "skip")
    with pytest.warns(UserWarning, match="passed through as plain JPEG"):
        assert torch.equal(skip(outside, image), image)
    assert skip.passed_through == 1
    assert torch.equal(skip(inside, image), image + 1)
    with pytest.warns(UserWarning, match="layout 4:4:4"):
        DomainGuard(_Plus(), domain, "warn")(_coeffs(10, "4:4:4"), image)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(DomainGuard(_Plus(), domain, "run")(outside, image), image + 1)
    assert guard(_Plus(), None) .__class__ is _Plus
    with pytest.raises(ValueError, match="outside_range"):
        guard(_Plus(), {"qualities": [10, 10]}, "ignore")


def test_a_recorded_policy_is_the_default_and_an_explicit_one_wins():
    recorded = {"qualities": [10, 50], "subsamplings": ["4:2:0"], "outside_range": "skip"}
    assert guard(_Plus(), recorded).policy == "skip"
    assert guard(_Plus(), recorded, "run").policy == "run"
    assert guard(_Plus(), {"qualities": [10, 50]}).policy == "warn"


def test_training_records_the_domain_and_restore_skips_outside(tmp_path, capsys):
    """The quickstart (QF 10..50) through train.py records its range and its pass-through policy; restore passes a
    QF 60 file through unchanged by default, and restores it when told to run."""
    import subprocess
    import sys
    import os
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    run = tmp_path / "run"
    cmd = [sys.executable, "train.py", "experiment=quickstart", "model/network=qgac_tiny", "trainer.max_steps=1",
           "trainer.val_check_interval=1", "data.samples_per_epoch=2", "data.batch_size=2", "data.crop_size=32",
           "data.val_source=sample:val", "+data.val_crop_size=64", "logger=none", f"hydra.run.dir={run}",
           "validate_after_fit=false"]
    result = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = next(run.rglob("last.ckpt"))
    meta = torch.load(ckpt, weights_only=True)["jpegrestore"]
    assert meta["trained_on"] == {"qualities": [10, 50], "subsamplings": ["4:2:0"], "outside_range": "skip"}

    import skimage.data
    from jpegrestore.cli import main

    photo = skimage.data.astronaut()[:48, :64]
    Image.fromarray(photo).save(tmp_path / "q60.jpg", quality=60)
    out = tmp_path / "out"
    assert main(["restore", str(tmp_path / "q60.jpg"), "-o", str(out), "--ckpt", str(ckpt), "--device", "cpu",
                 "-q"]) == 0
    err = capsys.readouterr().err
    assert "quality about 60" in err and "passed through as plain JPEG" in err
    with Image.open(tmp_path / "q60.jpg") as decoded:
        expected = np.asarray(decoded.convert("RGB"))
    assert np.array_equal(np.asarray(Image.open(out / "q60.png")), expected)
    assert main(["restore", str(tmp_path / "q60.jpg"), "-o", str(tmp_path / "run"), "--ckpt", str(ckpt),
                 "--outside-range", "run", "--device", "cpu", "-q"]) == 0
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "run" / "q60.png")), expected)
