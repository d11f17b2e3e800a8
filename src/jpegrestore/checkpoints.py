"""Checkpoints of jpegrestore recipes, read once from disk and asked for what they hold.

Every task writes ``checkpoint["jpegrestore"]`` (see :meth:`jpegrestore.tasks.base.RestorationTask.on_save_checkpoint`)::

    {"format": 1, "recipe": "qgac_stage2", "state_dict_prefix": "net.",
     "network": {"_target_": "jpegrestore.nn.qgac.QGAC", **constructor_kwargs}}

and the network weights under ``checkpoint["state_dict"]`` with that prefix.

    >>> ckpt = Checkpoint.read("logs/<task>/runs/<run>/checkpoints/last.ckpt")   # one torch.load
    >>> ckpt.recipe, ckpt.network_spec["_target_"]
    >>> network = load_network(ckpt)                                            # no second read

Every function here takes a path or a :class:`Checkpoint`; pass the object on to read each file once. This module
sits on the ground floor: networks, samplers, tasks and the evaluation all read checkpoints through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

import torch
from torch import nn

from jpegrestore.utils.instantiate import instantiate_object

METADATA_KEY = "jpegrestore"
FORMAT_VERSION = 1
#: What restore / evaluate do with a JPEG outside the qualities and layouts a checkpoint was trained on
#: (``trained_on``): restore and warn, pass it through as plain JPEG, or restore silently. A checkpoint may record
#: its own default as ``trained_on["outside_range"]``; an explicit choice of the user overrides it.
OUTSIDE_RANGE_POLICIES = ("warn", "skip", "run")


def _torch_load(path: Path, map_location: str | torch.device) -> Any:
    """``torch.load`` with tensors and plain containers only; ValueError naming the file when unreadable."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # zip, pickle and format errors all mean "not a readable checkpoint"
        raise ValueError(f"cannot read checkpoint {path}: {error}") from error


class Checkpoint:
    """A Lightning checkpoint file written by a jpegrestore task, loaded once.

    Args:
        data: the loaded checkpoint dict (must hold ``state_dict``).
        path: where it was read from (named in every error).
    """

    def __init__(self, data: dict[str, Any], path: str | Path = "<checkpoint>") -> None:
        self.path = Path(path)
        if not isinstance(data, dict) or "state_dict" not in data:
            raise ValueError(f"{self.path} is not a Lightning checkpoint (no 'state_dict' entry)")
        self.data = data

    @classmethod
    def read(cls, path: str | Path, map_location: str | torch.device = "cpu") -> "Checkpoint":
        """Load ``path`` (one ``torch.load``). FileNotFoundError / ValueError name the file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        return cls(_torch_load(path, map_location), path)

    @classmethod
    def of(cls, source: "CheckpointSource") -> "Checkpoint":
        """``source`` itself when it is already a Checkpoint, else :meth:`read` it."""
        return source if isinstance(source, Checkpoint) else cls.read(source)

    def __str__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r})"

    @property
    def meta(self) -> dict[str, Any]:
        """The ``jpegrestore`` entry. ValueError naming the file when it is absent (not written by a task)."""
        return checkpoint_metadata(self.data, str(self.path))

    @property
    def recipe(self) -> str:
        """Name of the training recipe that wrote it (e.g. ``"qgac_stage3"``; ``"unknown"`` if unrecorded)."""
        return str(self.meta.get("recipe", "unknown"))

    @property
    def network_spec(self) -> dict[str, Any]:
        """The network's ``{"_target_": ..., **constructor_kwargs}``."""
        return dict(self.meta["network"])

    def network_state_dict(self) -> dict[str, torch.Tensor]:
        """The network's weights (``state_dict`` entries under the recorded prefix, prefix removed)."""
        return network_state_dict(self.data, self.meta.get("state_dict_prefix", "net."))


CheckpointSource = Union[str, Path, Checkpoint]


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The loaded checkpoint dict of ``path`` (tensors only). FileNotFoundError / ValueError name the file."""
    return Checkpoint.read(path, map_location).data


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
    source: CheckpointSource, map_location: str | torch.device = "cpu", strict: bool = True,
    network_overrides: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Rebuild the restoration network stored in ``source`` (a path or a read :class:`Checkpoint`) and load its
    weights. -> module in eval mode.

    Works for any checkpoint written by a jpegrestore task (``last.ckpt``, best, interpolated exports).
    ``network_overrides`` replace constructor arguments of the stored spec (e.g. ``{"pretrained": DIR}`` to
    point a CODiff checkpoint at another copy of its base model). A network with ``load_trained_state_dict``
    (CODiff: the checkpoint holds only its trained tensors, the frozen base is loaded by its constructor)
    gets its weights through that method.
    """
    checkpoint = Checkpoint.of(source)
    spec = checkpoint.network_spec
    network = build_network({**spec, **dict(network_overrides or {})})
    state = checkpoint.network_state_dict()
    if hasattr(network, "load_trained_state_dict"):
        network.load_trained_state_dict(state, source=str(checkpoint))
        return network.to(map_location).eval()
    try:
        network.load_state_dict(state, strict=strict)
    except RuntimeError as error:
        raise ValueError(f"weights in {checkpoint} do not fit {spec['_target_']}: {error}") from error
    return network.to(map_location).eval()


def checkpoint_recipe(source: CheckpointSource) -> str:
    """Name of the training recipe that wrote ``source`` (e.g. ``"qgac_stage3"``)."""
    return Checkpoint.of(source).recipe


def checkpoint_description(source: CheckpointSource) -> list[str]:
    """Header lines saying what a checkpoint was trained with (for evaluation summaries).

    -> e.g. ``["recipe: qgac_stage3", "QGAC frequency grouping: isolated", "DCT statistics: computed ...",
    "texture network: minc_vgg16"]``, or for converted CODiff weights ``"CaVE input padded to a multiple of 8 (the
    authors' code)"``, ``"method options recorded: quantization=authors"``; entries the checkpoint does not
    record are left out.
    """
    meta = Checkpoint.of(source).meta
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
