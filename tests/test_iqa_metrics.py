"""The papers' metrics: DISTS and LPIPS equal pyiqa's on the same weights at full resolution (over 256 px), and
MUSIQ, MANIQA, CLIPIQA run offline from local files in the upstream layouts (random weights)."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest
import torch

from jpegrestore import weights
from test_metrics import degrade, isolated, natural_like, no_network, save_random_features  # noqa: F401

pyiqa = pytest.importorskip("pyiqa", reason="the optional extra iqa (pyiqa) is not installed")


def _torchvision_stub(module, arch: str, state: dict[str, torch.Tensor]):
    """pyiqa builds its backbones with ``torchvision.models.<arch>(weights=...)`` (a download); this namespace
    returns the architecture with ``state`` loaded instead."""
    import torchvision

    def build(*args, **kwargs):
        net = getattr(torchvision.models, arch)(weights=None)
        net.features.load_state_dict({k.removeprefix("features."): v for k, v in state.items()})
        return net

    return SimpleNamespace(**{**vars(module), arch: build})


def test_dists_equals_pyiqa_at_full_resolution_where_piq_shrinks(isolated, no_network, monkeypatch):  # noqa: F811
    from pyiqa.archs import dists_arch

    from jpegrestore.metrics import DISTSMetric, MetricSuite

    state = save_random_features(isolated / "vgg16-397923af.pth", "vgg16", seed=1)
    g = torch.Generator().manual_seed(2)
    alpha, beta = torch.rand(1, 1475, 1, 1, generator=g), torch.rand(1, 1475, 1, 1, generator=g)
    total = alpha.sum() + beta.sum()
    torch.save({"alpha": alpha / total, "beta": beta / total}, isolated / "dists_weights.pt")
    monkeypatch.setattr(dists_arch, "models", _torchvision_stub(dists_arch.models, "vgg16", state))
    reference = dists_arch.DISTS(pretrained=False).eval()
    with torch.no_grad():
        reference.alpha.copy_(alpha)
        reference.beta.copy_(beta)
    target = natural_like(1, 3, 264, 280)  # shorter side over 256: piq's DISTS would shrink it
    pred = degrade(target, 0.08)
    suite = MetricSuite(["dists"])
    with torch.no_grad():
        expected = reference(pred, target).flatten()
        ours = suite.per_image(pred, target)["dists"]
        shrunk = DISTSMetric()(pred, target)
    assert suite.status["dists"] == "ok"
    torch.testing.assert_close(ours, expected, atol=2e-6, rtol=0)
    assert (shrunk - expected).abs().item() > 1e-4  # the protocol difference this metric removes


def test_lpips_equals_pyiqa_at_full_resolution(isolated, no_network, monkeypatch):  # noqa: F811
    from pyiqa.archs import lpips_arch

    from jpegrestore.metrics import LPIPSMetric

    state = save_random_features(isolated / "alexnet-owt-7be5be79.pth", "alexnet")
    monkeypatch.setattr(lpips_arch, "models", _torchvision_stub(lpips_arch.models, "alexnet", state))
    ours = LPIPSMetric("alex")
    reference = lpips_arch.LPIPS(net="alex", version="0.1", pretrained=False).eval()
    linear = {k: v for k, v in ours.model.state_dict().items() if k.startswith("lin")}
    assert len(linear) >= 5  # lin0..lin4 (and their aliases in lins)
    missing, unexpected = reference.load_state_dict(linear, strict=False)
    assert not unexpected and not any(k.startswith("lin") for k in missing)
    target = natural_like(1, 3, 264, 280, seed=3)
    pred = degrade(target, 0.08)
    with torch.no_grad():
        expected = reference(pred, target).flatten()  # pyiqa: inputs in [0, 1], normalised inside
        got = ours(pred, target)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    assert got.item() > 0


def test_musiq_runs_offline_from_its_file_and_equals_pyiqa(isolated, no_network):  # noqa: F811
    from pyiqa.archs.musiq_arch import MUSIQ

    from jpegrestore.metrics import MetricSuite

    torch.manual_seed(0)
    upstream = MUSIQ(pretrained=False).eval()  # pyiqa's KonIQ model: one output
    file = isolated / "musiq_koniq_ckpt-e95806b9.pth"
    torch.save(upstream.state_dict(), file)  # pyiqa's layout: a bare state dict
    images = natural_like(2, 3, 48, 64)
    suite = MetricSuite(["musiq"])
    scores = suite.per_image(images, images)["musiq"]
    with torch.no_grad():
        expected = torch.stack([upstream(images[i:i + 1]).flatten()[0] for i in range(2)])
    assert suite.status["musiq"] == "ok" and scores.shape == (2,)
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=0)
    assert scores[0] != scores[1]


def _write_tiny_clip(path) -> None:
    """A tiny CLIP with a ModifiedResNet image encoder (RN50's key layout), saved as OpenAI ships RN50.pt: a
    TorchScript archive."""
    from pyiqa.archs.clip_model import CLIP

    torch.manual_seed(0)
    model = CLIP(embed_dim=16, image_resolution=64, vision_layers=(1, 1, 1, 1), vision_width=4,
                 vision_patch_size=None, context_length=77, vocab_size=49408, transformer_width=64,
                 transformer_heads=1, transformer_layers=1).float().eval()
    text = torch.zeros(1, 77, dtype=torch.long)
    text[0, :3] = torch.tensor([49406, 320, 49407])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape checks
        traced = torch.jit.trace(model, (torch.rand(1, 3, 64, 64), text), check_trace=False)
    torch.jit.save(traced, str(path))


def test_clipiqa_runs_offline_from_its_file_and_equals_pyiqa(isolated, no_network):  # noqa: F811
    from jpegrestore.metrics import MetricSuite

    file = isolated / "RN50.pt"
    _write_tiny_clip(file)
    images = natural_like(2, 3, 64, 64, seed=4)
    suite = MetricSuite(["clipiqa"])
    scores = suite.per_image(images, images)["clipiqa"]
    from pyiqa.archs.clipiqa_arch import CLIPIQA  # importable once the metric set up openai-clip's import

    with torch.no_grad():
        reference = CLIPIQA(backbone=str(file)).eval()
        expected = torch.cat([reference(images[i:i + 1]).flatten() for i in range(2)])
    assert suite.status["clipiqa"] == "ok"
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=0)
    assert ((scores > 0) & (scores < 1)).all()


@pytest.mark.slow
def test_maniqa_runs_offline_from_its_file(isolated, no_network):  # noqa: F811
    """MANIQA (a ViT-B/8 inside): its checkpoint in pyiqa's layout, seeded crops make the score repeatable."""
    import timm
    from pyiqa.archs import maniqa_arch

    from jpegrestore.metrics import MetricSuite

    original = timm.create_model
    timm.create_model = lambda name, pretrained=False, **kw: original(name, pretrained=False, **kw)
    try:
        torch.manual_seed(0)
        upstream = maniqa_arch.MANIQA(pretrained=False, train_dataset="koniq", scale=0.8).eval()
    finally:
        timm.create_model = original
    torch.save(upstream.state_dict(), isolated / "ckpt_koniq10k.pt")
    images = natural_like(1, 3, 232, 240)
    suite = MetricSuite(["maniqa"])
    first = suite.per_image(images, images)["maniqa"]
    assert suite.status["maniqa"] == "ok" and first.shape == (1,)
    with torch.no_grad():
        torch.manual_seed(0)
        expected = upstream(images).flatten()
    torch.testing.assert_close(first, expected, atol=1e-5, rtol=0)


def test_missing_files_and_a_missing_pyiqa_are_reported(isolated, no_network, monkeypatch):  # noqa: F811
    import sys

    from jpegrestore.metrics import MetricSuite
    from jpegrestore.metrics.iqa import NoReferenceMetric

    suite = MetricSuite(["musiq", "clipiqa", "psnr"])
    assert suite.status == {"musiq": "unavailable (missing musiq_koniq_ckpt-e95806b9.pth)",
                            "clipiqa": "unavailable (missing RN50.pt)", "psnr": "ok"}
    monkeypatch.setitem(sys.modules, "pyiqa", None)
    with pytest.raises(ImportError, match=r"pip install -e '\.\[iqa\]'"):
        NoReferenceMetric("musiq")
    assert MetricSuite(["maniqa"]).status["maniqa"].startswith("unavailable (error: metric maniqa needs pyiqa")
    found = {row.name: row.found_path for row in weights.status()}
    assert {"musiq_koniq", "maniqa_koniq", "clip_rn50"} <= set(found)
