"""Rebuild a restoration network from a checkpoint alone.

Every task writes ``checkpoint["jpegrestore"]`` (see :meth:`RestorationTask.on_save_checkpoint`)::

    {"format": 1, "recipe": "qgac_stage2", "state_dict_prefix": "net.",
     "network": {"_target_": "jpegrestore.nn.qgac.QGAC", **constructor_kwargs}}

and the network weights under ``checkpoint["state_dict"]`` with that prefix.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from jpegrestore.utils.instantiate import instantiate_object

METADATA_KEY = "jpegrestore"
FORMAT_VERSION = 1


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint file (tensors only, no arbitrary pickles). FileNotFoundError / ValueError name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # zip, pickle and format errors all mean "not a readable checkpoint"
        raise ValueError(f"cannot read checkpoint {path}: {error}") from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{path} is not a Lightning checkpoint (no 'state_dict' entry)")
    return checkpoint


def checkpoint_metadata(checkpoint: dict[str, Any], source: str = "<checkpoint>") -> dict[str, Any]:
    """The ``jpegrestore`` entry of a loaded checkpoint. ValueError naming ``source`` when absent."""
    meta = checkpoint.get(METADATA_KEY)
    if not isinstance(meta, dict) or "network" not in meta:
        raise ValueError(
            f"{source} has no '{METADATA_KEY}' entry describing its network; it was not written by a "
            "jpegrestore task (train.py) or by export_interpolated"
        )
    return meta


def network_state_dict(checkpoint: dict[str, Any], prefix: str) -> dict[str, torch.Tensor]:
    """Entries of ``checkpoint["state_dict"]`` under ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}


def build_network(spec: dict[str, Any]) -> nn.Module:
    """Instantiate a network from its ``{"_target_": ..., **kwargs}`` spec (weights left as initialised)."""
    return instantiate_object(spec)


def load_network(
    ckpt_path: str | Path, map_location: str | torch.device = "cpu", strict: bool = True,
    network_overrides: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Rebuild the restoration network stored in ``ckpt_path`` and load its weights. -> module in eval mode.

    Works for any checkpoint written by a jpegrestore task (``last.ckpt``, best, interpolated exports).
    ``network_overrides`` replace constructor arguments of the stored spec (e.g. ``{"pretrained": DIR}`` to
    point a CODiff checkpoint at another copy of its base model). A network with ``load_trained_state_dict``
    (CODiff: the checkpoint holds only its trained tensors, the frozen base is loaded by its constructor)
    gets its weights through that method.
    """
    checkpoint = read_checkpoint(ckpt_path, map_location)
    meta = checkpoint_metadata(checkpoint, str(ckpt_path))
    network = build_network({**meta["network"], **dict(network_overrides or {})})
    state = network_state_dict(checkpoint, meta.get("state_dict_prefix", "net."))
    if hasattr(network, "load_trained_state_dict"):
        network.load_trained_state_dict(state, source=str(ckpt_path))
        return network.to(map_location).eval()
    try:
        network.load_state_dict(state, strict=strict)
    except RuntimeError as error:
        raise ValueError(f"weights in {ckpt_path} do not fit {meta['network']['_target_']}: {error}") from error
    return network.to(map_location).eval()


def checkpoint_recipe(ckpt_path: str | Path) -> str:
    """Name of the training recipe that wrote ``ckpt_path`` (e.g. ``"qgac_stage3"``)."""
    checkpoint = read_checkpoint(ckpt_path)
    return str(checkpoint_metadata(checkpoint, str(ckpt_path)).get("recipe", "unknown"))


def checkpoint_description(ckpt_path: str | Path) -> list[str]:
    """Header lines saying what a checkpoint was trained with (for evaluation summaries).

    -> e.g. ``["recipe: qgac_stage3", "QGAC frequency grouping: isolated", "DCT statistics: computed ...",
    "texture network: minc_vgg16"]``, or for converted CODiff weights ``"CaVE input padded to a multiple of 8 (the
    authors' code)"``, ``"method options recorded: quantization=authors"``; entries the checkpoint does not
    record are left out.
    """
    try:
        checkpoint = torch.load(Path(ckpt_path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # same failure modes as read_checkpoint
        raise ValueError(f"cannot read checkpoint {ckpt_path}: {error}") from error
    meta = checkpoint_metadata(checkpoint, str(ckpt_path))
    network = meta.get("network", {})
    lines = [f"recipe: {meta.get('recipe', 'unknown')}"]
    if str(network.get("_target_", "")).endswith(".QGAC"):
        lines.append(f"QGAC frequency grouping: {network.get('frequency_grouping', 'isolated')}")
    if meta.get("dct_stats"):
        lines.append(f"DCT statistics: {meta['dct_stats']}")
    if meta.get("texture_network"):
        lines.append(f"texture network: {meta['texture_network']}")
    cave = network.get("cave")
    if isinstance(cave, dict) and cave.get("pad_multiple", 32) != 32:
        lines.append(f"CaVE input padded to a multiple of {cave['pad_multiple']} (the authors' code)")
    if meta.get("method_options"):
        options = ", ".join(f"{k}={v}" for k, v in sorted(meta["method_options"].items()))
        lines.append(f"method options recorded: {options}")
    return lines
