"""Read the authors' released CODiff and CaVE files and turn them into a jpegrestore checkpoint.

The CODiff file (``torch.save`` of a dict, written from CUDA) holds::

    state_dict_unet   UNet tensors whose peft names contain "lora" or "conv_in":
                        <module>.lora_A.<adapter>.weight, <module>.lora_B.<adapter>.weight
                        conv_in.base_layer.weight, conv_in.base_layer.bias   (the trained conv_in)
    state_dict_vae    VAE-encoder LoRA tensors, same key pattern
    proj              state dict of Linear(512 -> 1024): weight, bias
    rank_unet, rank_vae
    unet_lora_encoder_modules, unet_lora_decoder_modules, unet_lora_others_modules, vae_lora_encoder_modules
                      the target module names of the adapters default_encoder / default_decoder /
                      default_others (UNet) and default_encoder (VAE); the lists contain duplicates

Their ``LoraConfig`` has no ``lora_alpha``, so peft's default alpha 8 applies and every LoRA adds
``(8 / rank) * B(A(x))`` to its base layer: 0.5 at rank 16. The CaVE file is the plain state dict of their
``CaVE(in_nc=3, out_nc=3, nc=[64, 128, 256, 512], nb=4, act_mode="BR")``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from jpegrestore.nn.codiff.lora import PEFT_DEFAULT_ALPHA
from jpegrestore.nn.codiff.pretrained import DEFAULT_PRETRAINED  # noqa: F401  (the base of the released weights)

UNET_ADAPTERS = {
    "default_encoder": "unet_lora_encoder_modules",
    "default_decoder": "unet_lora_decoder_modules",
    "default_others": "unet_lora_others_modules",
}
VAE_ADAPTERS = {"default_encoder": "vae_lora_encoder_modules"}
REQUIRED_KEYS = ("state_dict_unet", "state_dict_vae", "proj", "rank_unet", "rank_vae",
                 *UNET_ADAPTERS.values(), *VAE_ADAPTERS.values())
CONV_IN_KEYS = ("conv_in.base_layer.weight", "conv_in.base_layer.bias")
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<side>[AB])\.(?P<adapter>[^.]+)\.weight$")


@dataclass(frozen=True)
class LoRAWeights:
    """One low-rank update: ``layer(x) + scale * up(down(x))``.

    ``down`` is peft's lora_A weight ([r, in] for a Linear, [r, in, k, k] for a Conv2d) and ``up`` its
    lora_B weight ([out, r] or [out, r, 1, 1]).
    """

    down: Tensor
    up: Tensor
    scale: float

    @property
    def rank(self) -> int:
        return self.down.shape[0]

    def delta(self) -> Tensor:
        """The update merged into the base layer's weight shape: scale * up @ down."""
        up = self.up.flatten(1)
        return self.scale * (up @ self.down.flatten(1)).reshape(up.shape[0], *self.down.shape[1:])


@dataclass
class AuthorsCODiff:
    """The content of the authors' CODiff file, checked and grouped by module."""

    unet_lora: dict[str, LoRAWeights]
    vae_lora: dict[str, LoRAWeights]
    conv_in: dict[str, Tensor]
    proj: dict[str, Tensor]
    rank_unet: int
    rank_vae: int
    unet_adapter_of: dict[str, str] = field(default_factory=dict)


def _layout_error(source: str, problem: str) -> ValueError:
    return ValueError(
        f"{source} is not the authors' CODiff file ({problem}); expected a torch-saved dict with "
        f"{', '.join(REQUIRED_KEYS)} (see jpegrestore.nn.codiff.convert)"
    )


def _module_lists(content: Mapping[str, Any], adapters: Mapping[str, str], source: str) -> dict[str, str]:
    """module name -> adapter, from the file's target lists (duplicates dropped)."""
    adapter_of: dict[str, str] = {}
    for adapter, key in adapters.items():
        names = content[key]
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise _layout_error(source, f"'{key}' is not a list of module names")
        for name in names:
            if adapter_of.setdefault(name, adapter) != adapter:
                raise _layout_error(source, f"module {name!r} is listed for two adapters")
    return adapter_of


def _lora_pairs(
    tensors: Mapping[str, Any], adapter_of: Mapping[str, str], rank: int, entry: str, source: str,
    allowed_extra: tuple[str, ...] = (),
) -> dict[str, LoRAWeights]:
    """Group ``<module>.lora_{A,B}.<adapter>.weight`` tensors into one LoRAWeights per module."""
    halves: dict[str, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if key in allowed_extra:
            continue
        match = _LORA_KEY.match(key)
        if match is None or not isinstance(value, Tensor):
            raise _layout_error(source, f"unexpected key {key!r} in '{entry}'")
        module, side, adapter = match["module"], match["side"], match["adapter"]
        if adapter_of.get(module) != adapter:
            raise _layout_error(
                source, f"key {key!r} in '{entry}': module is listed for adapter {adapter_of.get(module)!r}"
            )
        halves.setdefault(module, {})[side] = value
    missing = sorted(set(adapter_of) - set(halves))
    if missing:
        raise _layout_error(source, f"'{entry}' has no LoRA tensors for listed module(s) {missing[:3]}")
    pairs = {}
    for module, sides in halves.items():
        if set(sides) != {"A", "B"}:
            raise _layout_error(source, f"'{entry}' has lora_{''.join(sides)} but not both halves for {module!r}")
        down, up = sides["A"].float(), sides["B"].float()
        if down.shape[0] != rank or up.shape[1] != rank:
            raise _layout_error(
                source, f"{module!r} has LoRA shapes {tuple(down.shape)} / {tuple(up.shape)}, not rank {rank}"
            )
        pairs[module] = LoRAWeights(down, up, PEFT_DEFAULT_ALPHA / rank)
    return pairs


def parse_authors_codiff(content: Any, source: str = "<CODiff file>") -> AuthorsCODiff:
    """Check a loaded authors' CODiff dict and group its tensors. ValueError naming ``source`` and the key."""
    if not isinstance(content, Mapping):
        raise _layout_error(source, f"it holds a {type(content).__name__}, not a dict")
    missing = [k for k in REQUIRED_KEYS if k not in content]
    if missing:
        raise _layout_error(source, f"missing {missing}")
    ranks = {}
    for key in ("rank_unet", "rank_vae"):
        value = content[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _layout_error(source, f"'{key}' is {value!r}, not a positive int")
        ranks[key] = value
    unet, vae, proj = content["state_dict_unet"], content["state_dict_vae"], content["proj"]
    for name, value in (("state_dict_unet", unet), ("state_dict_vae", vae), ("proj", proj)):
        if not isinstance(value, Mapping):
            raise _layout_error(source, f"'{name}' is not a state dict")
    absent = [k for k in CONV_IN_KEYS if k not in unet]
    if absent:
        raise _layout_error(source, f"'state_dict_unet' lacks the trained conv_in ({absent})")
    if set(proj) != {"weight", "bias"} or proj["weight"].ndim != 2:
        raise _layout_error(source, f"'proj' should be a Linear state dict, has {sorted(proj)}")
    unet_adapters = _module_lists(content, UNET_ADAPTERS, source)
    vae_adapters = _module_lists(content, VAE_ADAPTERS, source)
    return AuthorsCODiff(
        unet_lora=_lora_pairs(unet, unet_adapters, ranks["rank_unet"], "state_dict_unet", source, CONV_IN_KEYS),
        vae_lora=_lora_pairs(vae, vae_adapters, ranks["rank_vae"], "state_dict_vae", source),
        conv_in={"weight": unet[CONV_IN_KEYS[0]].float(), "bias": unet[CONV_IN_KEYS[1]].float()},
        proj={k: v.float() for k, v in proj.items()},
        rank_unet=ranks["rank_unet"],
        rank_vae=ranks["rank_vae"],
        unet_adapter_of=unet_adapters,
    )


def load_torch_file(path: str | Path, what: str) -> Any:
    """``torch.load`` on CPU, tensors and plain containers only. FileNotFoundError / ValueError name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # zip, pickle and format errors all mean "not a readable file"
        raise ValueError(f"cannot read {what} {path}: {error}") from error


def read_authors_codiff(path: str | Path) -> AuthorsCODiff:
    """Load and check the authors' CODiff file (``codiff.pkl``)."""
    return parse_authors_codiff(load_torch_file(path, "CODiff file"), str(path))


def read_authors_cave(path: str | Path) -> dict[str, Tensor]:
    """The authors' CaVE state dict (``cave.pth``) converted for our :class:`jpegrestore.nn.cave.CaVE`."""
    from jpegrestore.nn.cave import convert_authors_state_dict

    content = load_torch_file(path, "CaVE file")
    if not isinstance(content, Mapping):
        raise ValueError(f"{path} is not the authors' CaVE state dict (it holds a {type(content).__name__})")
    try:
        return convert_authors_state_dict(content)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error


#: Our CaVE at the widths of the released weights (the authors' CaVE(nc=[64, 128, 256, 512], nb=4, "BR")),
#: padding its input to a multiple of 8 as their code does (floor(H8/32) x floor(W8/32) tokens).
AUTHORS_CAVE_SPEC = {
    "_target_": "jpegrestore.nn.cave.CaVE", "channels": [64, 128, 256, 512], "blocks": 4, "bn_eps": 1e-4,
    "init_gain": None, "pad_multiple": 8,
}
#: CODiffMethod options recorded in the checkpoint: the output made on 8-bit levels as their test script.
AUTHORS_METHOD_OPTIONS = {"quantization": "authors"}


def codiff_state_dict(authors: AuthorsCODiff, cave_state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The authors' tensors under the names of :meth:`jpegrestore.nn.codiff.generator.CODiff.trained_state_dict`.

    Our CODiff carries the same three UNet adapters and the VAE-encoder adapter with the same alpha 8, so
    every LoRA tensor keeps its value; only the ``unet.`` / ``vae.`` / ``proj.`` / ``cave.`` prefixes are added.
    """
    state: dict[str, Tensor] = {}
    for prefix, pairs, adapter_of in (
        ("unet.", authors.unet_lora, authors.unet_adapter_of),
        ("vae.", authors.vae_lora, dict.fromkeys(authors.vae_lora, "default_encoder")),
    ):
        for module, lora in pairs.items():
            adapter = adapter_of[module]
            state[f"{prefix}{module}.lora_A.{adapter}.weight"] = lora.down
            state[f"{prefix}{module}.lora_B.{adapter}.weight"] = lora.up
    state.update({f"unet.conv_in.base_layer.{k}": v for k, v in authors.conv_in.items()})
    state.update({f"proj.{k}": v for k, v in authors.proj.items()})
    state.update({f"cave.{k}": v for k, v in cave_state.items()})
    return state


def convert_authors_files(
    codiff_path: str | Path, cave_path: str | Path, out_path: str | Path, pretrained: str,
    verify: bool = True,
) -> Path:
    """Write a jpegrestore checkpoint of the authors' released CODiff + CaVE weights. -> ``out_path``.

    The checkpoint records ``pretrained`` (the Stable Diffusion 2.1 base the weights belong to; never
    stored) and is rebuilt like a trained one by :func:`jpegrestore.checkpoints.load_network`. It
    records the authors' behaviour where ours differs, so that evaluation reproduces their test script:
    the CaVE pads to a multiple of 8 (``pad_multiple=8`` in the network spec) and the method makes its
    output on 8-bit levels (``method_options``: ``quantization="authors"``, read by
    :class:`jpegrestore.evaluation.codiff.CODiffMethod`).
    ``verify`` builds the model on ``pretrained`` and loads the weights first, so a base that does not fit
    (other module names, other cross-attention size) is reported now rather than at evaluation.
    """
    authors = read_authors_codiff(codiff_path)
    if authors.rank_unet != authors.rank_vae:
        raise ValueError(
            f"{codiff_path}: UNet LoRA rank {authors.rank_unet} differs from VAE rank {authors.rank_vae}; "
            "CODiff here uses one rank for both"
        )
    state = codiff_state_dict(authors, read_authors_cave(cave_path))
    spec = {
        "_target_": "jpegrestore.nn.codiff.generator.CODiff",
        # as CODiff records it: a folder as an absolute path, a repo id as given
        "pretrained": str(Path(pretrained).resolve()) if Path(pretrained).is_dir() else str(pretrained),
        "cave": dict(AUTHORS_CAVE_SPEC),
        "cave_source": str(Path(cave_path).resolve()),
        "cross_attention_dim": int(authors.proj["weight"].shape[0]),
        "timestep": 499,
        "lora_rank": authors.rank_unet,
        "lora_alpha": float(PEFT_DEFAULT_ALPHA),
        "lora_init": "gaussian",
    }
    if verify:
        from jpegrestore.utils.instantiate import instantiate_object

        network = instantiate_object(spec)
        network.load_trained_state_dict(state, str(codiff_path))
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({
        "state_dict": {f"net.{k}": v.contiguous() for k, v in state.items()},
        "jpegrestore": {
            "format": 1, "recipe": "codiff_stage2", "state_dict_prefix": "net.", "network": spec,
            "evaluation_method": "jpegrestore.evaluation.codiff.CODiffMethod",
            # the authors' training data: CODiff's quality mixture (8..95), 4:2:0 (OpenCV / libjpeg defaults)
            "trained_on": {"qualities": [8, 95], "subsamplings": ["4:2:0"]},
            "pretrained": spec["pretrained"],
            "converted_from": {"codiff": str(Path(codiff_path).resolve()), "cave": spec["cave_source"]},
            "method_options": dict(AUTHORS_METHOD_OPTIONS),
        },
    }, out)
    return out
