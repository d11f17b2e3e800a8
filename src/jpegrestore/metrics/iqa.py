"""No-reference quality metrics of the papers (MUSIQ, MANIQA, CLIPIQA), computed by pyiqa's own networks from
local weight files (never downloaded). pyiqa is an optional extra: ``pip install -e '.[iqa]'``.

Each metric scores the restored image alone; ``forward(pred, target)`` ignores ``target`` so that the metric suite
treats them like the full-reference model metrics. Scores follow pyiqa's defaults: MUSIQ trained on KonIQ-10k
(about 0..100), MANIQA trained on KonIQ-10k (about 0..1; pyiqa averages 20 random 224-px crops, seeded here so that
a score is a function of the image), CLIPIQA with CLIP RN50 and pyiqa's prompt pairs (0..1).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor, nn

from jpegrestore import weights

#: metric name -> (pyiqa's name, registry entry of its weight file)
NO_REFERENCE = {"musiq": ("musiq", "musiq_koniq"), "maniqa": ("maniqa", "maniqa_koniq"),
                "clipiqa": ("clipiqa", "clip_rn50")}
#: The seed of MANIQA's random test crops.
CROP_SEED = 0


def require_pyiqa(metric: str):
    """The pyiqa module, or ImportError saying how to install the optional extra."""
    try:
        import pyiqa
    except ImportError as error:
        raise ImportError(f"metric {metric} needs pyiqa, an optional extra (non-commercial licence): "
                          f"pip install -e '.[iqa]' (see README, Evaluation)") from error
    return pyiqa


@contextlib.contextmanager
def offline_pyiqa(files: dict[str, Path]) -> Iterator[None]:
    """pyiqa's download cache pointed at a folder holding ``files`` ({upstream file name: local path}); any other
    download raises :class:`jpegrestore.weights.MissingWeightsError` instead of reaching the network."""
    from pyiqa.utils import download_util

    def refuse(url: str, *args, **kwargs) -> None:
        name = url.rsplit("/", 1)[-1]
        raise weights.MissingWeightsError(f"pyiqa asked to download {url}; nothing is downloaded here", (name,))

    with tempfile.TemporaryDirectory(prefix="jpegrestore-pyiqa-") as cache:
        for name, path in files.items():
            os.symlink(Path(path).resolve(), Path(cache) / name)
        saved = download_util.DEFAULT_CACHE_DIR, download_util.download_url_to_file
        download_util.DEFAULT_CACHE_DIR, download_util.download_url_to_file = cache, refuse
        try:
            yield
        finally:
            download_util.DEFAULT_CACHE_DIR, download_util.download_url_to_file = saved


def _build(name: str, path: str | os.PathLike[str] | None) -> nn.Module:
    require_pyiqa(name)
    entry = NO_REFERENCE[name][1]
    file = weights.resolve(entry, path)
    upstream = weights.spec_for(entry).files[0]
    if name == "musiq":
        from pyiqa.archs.musiq_arch import MUSIQ

        return MUSIQ(pretrained="koniq10k", pretrained_model_path=str(file))
    if name == "maniqa":
        import timm
        from pyiqa.archs import maniqa_arch

        def no_download(model_name: str, pretrained: bool = False, **kwargs):  # the checkpoint holds the ViT too
            return timm.create_model(model_name, pretrained=False, **kwargs)

        saved = maniqa_arch.timm
        maniqa_arch.timm = type("timm_offline", (), {"create_model": staticmethod(no_download)})
        try:
            with offline_pyiqa({upstream: file}):
                return maniqa_arch.MANIQA(train_dataset="koniq", scale=0.8)
        finally:
            maniqa_arch.timm = saved
    _clip_compat()
    from pyiqa.archs.clipiqa_arch import CLIPIQA

    return CLIPIQA(backbone=str(file))  # clip.load takes the file (JIT archive or state dict) directly


def _clip_compat() -> None:
    """openai-clip (pyiqa's tokenizer for CLIPIQA) imports ``pkg_resources.packaging``, gone from setuptools >= 81:
    give it the ``packaging`` package under that name when pkg_resources is missing."""
    import importlib.util
    import sys
    import types

    if "pkg_resources" in sys.modules or importlib.util.find_spec("pkg_resources") is not None:
        return
    import packaging.version

    sys.modules["pkg_resources"] = types.SimpleNamespace(packaging=packaging)


class NoReferenceMetric(nn.Module):
    """MUSIQ, MANIQA or CLIPIQA per image: ``forward(pred [B, 3, H, W] in [0, 1], target ignored) -> Tensor[B]``.

    Args:
        name: "musiq", "maniqa" or "clipiqa".
        path: the weight file (else resolved by ``jpegrestore.weights``).
    """

    def __init__(self, name: str, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        if name not in NO_REFERENCE:
            raise ValueError(f"unknown no-reference metric {name!r}; known: {list(NO_REFERENCE)}")
        self.name = name
        self.net = _build(name, path).eval()

    @torch.no_grad()
    def forward(self, pred: Tensor, target: Tensor | None = None) -> Tensor:
        if pred.dim() != 4 or pred.shape[1] not in (1, 3):
            raise ValueError(f"{self.name} expects images [B, 1 or 3, H, W], got {tuple(pred.shape)}")
        image = pred.float().expand(-1, 3, -1, -1)
        scores = []
        for i in range(image.shape[0]):  # per image: MUSIQ and MANIQA score one image at a time
            with torch.random.fork_rng(devices=[image.device] if image.device.type == "cuda" else []):
                torch.manual_seed(CROP_SEED)
                scores.append(self.net(image[i:i + 1]).reshape(-1)[:1])
        return torch.cat(scores)
