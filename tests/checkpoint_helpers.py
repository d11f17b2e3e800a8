"""A tiny random QGAC checkpoint laid out as the training tasks write it (state_dict "net." + metadata)."""

from __future__ import annotations

from pathlib import Path

import torch

TINY_QGAC = dict(block_channels=8, freq_channels=64, color_channels=[4, 8], cfm_hidden=4, inner_channels=4,
                 fusion_width=1)


def write_tiny_checkpoint(path: Path):
    """Save a seeded tiny QGAC to ``path``. Returns (path, network in eval mode)."""
    from jpegrestore.nn.qgac import QGAC

    torch.manual_seed(0)
    net = QGAC(**TINY_QGAC).eval()
    torch.save({
        "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
        "jpegrestore": {"format": 1, "recipe": "tiny_qgac", "state_dict_prefix": "net.",
                        "network": {"_target_": "jpegrestore.nn.qgac.QGAC", **TINY_QGAC}},
    }, path)
    return path, net
