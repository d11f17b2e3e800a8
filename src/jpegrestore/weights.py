"""Offline resolution of pretrained weights.

Nothing is ever downloaded. Every pretrained file is looked up, in this order, in
(1) an explicit path given by the caller, (2) the directory (or ``os.pathsep``
separated directories) in ``$JPEGRESTORE_WEIGHTS``, (3) the torch hub cache
(``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch/hub/checkpoints``) or, for
Hugging Face repositories, the Hugging Face hub cache, and (4) for files that ship
inside an installed package (the LPIPS linear layers), that package.

When a file cannot be found, :class:`MissingWeightsError` names the file, every
place that was searched and where to put it.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

ENV_VAR = "JPEGRESTORE_WEIGHTS"

_TORCHVISION = "https://download.pytorch.org/models/"
_PYIQA = "https://huggingface.co/chaofengc/IQA-PyTorch-Weights/resolve/main/"


@dataclass(frozen=True)
class WeightSpec:
    """One registry entry: the files a pretrained component needs and who uses it.

    ``files`` are all required; ``files[0]`` is the primary file returned by
    :func:`resolve`. ``packaged`` maps a file name to ``"package/relative/path"`` for
    files that ship inside an installed Python package. ``hf_repo`` marks an entry
    that is a whole Hugging Face repository (``files`` then holds a marker file of
    the repository and :func:`resolve` returns its directory).
    """

    name: str
    used_by: str
    files: tuple[str, ...]
    sources: tuple[str, ...] = ()
    packaged: dict[str, str] = field(default_factory=dict)
    hf_repo: str | None = None


REGISTRY: dict[str, WeightSpec] = {
    spec.name: spec
    for spec in (
        WeightSpec(
            "lpips_alex",
            "metric: LPIPS (AlexNet)",
            ("alexnet-owt-7be5be79.pth", "alex.pth"),
            (_TORCHVISION + "alexnet-owt-7be5be79.pth", "alex.pth: shipped in the `lpips` package"),
            packaged={"alex.pth": "lpips/weights/v0.1/alex.pth"},
        ),
        WeightSpec(
            "lpips_vgg",
            "metric: LPIPS (VGG16)",
            ("vgg16-397923af.pth", "vgg.pth"),
            (_TORCHVISION + "vgg16-397923af.pth", "vgg.pth: shipped in the `lpips` package"),
            packaged={"vgg.pth": "lpips/weights/v0.1/vgg.pth"},
        ),
        WeightSpec(
            "dists",
            "metric: DISTS (piq); loss: DISTS (CODiff)",
            ("dists_weights.pt", "vgg16-397923af.pth"),
            (
                "https://github.com/photosynthesis-team/piq/releases/download/v0.4.1/dists_weights.pt",
                _TORCHVISION + "vgg16-397923af.pth",
            ),
        ),
        WeightSpec(
            "fid",
            "metric: FID (pytorch-fid Inception)",
            ("pt_inception-2015-12-05-6726825d.pth",),
            (
                "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                "pt_inception-2015-12-05-6726825d.pth",
            ),
        ),
        WeightSpec(
            "vgg16",
            "recipe: QGAC texture loss (VGG16 conv5_3)",
            ("vgg16-397923af.pth",),
            (_TORCHVISION + "vgg16-397923af.pth",),
        ),
        WeightSpec(
            "minc_vgg16",
            "recipe: QGAC texture loss, the paper's MINC-2500 VGG16 (texture_network=minc_vgg16)",
            ("minc_vgg16.pth",),
            ("Bell et al. 2015 MINC-2500 VGG16 Caffe model (http://opensurfaces.cs.cornell.edu/publications/minc/), "
             "converted with `python -m jpegrestore.losses.convert_minc`",),
        ),
        WeightSpec(
            "vgg19",
            "recipe: posterior GAN perceptual loss (VGG19 conv5_4)",
            ("vgg19-dcbb9e9d.pth",),
            (_TORCHVISION + "vgg19-dcbb9e9d.pth",),
        ),
        WeightSpec(
            "stable_diffusion",
            "recipe: CaVE/CODiff (Stable Diffusion 2.1 base, diffusers layout)",
            ("model_index.json",),
            ("https://huggingface.co/stabilityai/stable-diffusion-2-1-base",),
            hf_repo="stabilityai/stable-diffusion-2-1-base",
        ),
        WeightSpec(
            "musiq_koniq",
            "metric: MUSIQ (KonIQ-10k), through pyiqa (optional extra iqa)",
            ("musiq_koniq_ckpt-e95806b9.pth",),
            (_PYIQA + "musiq_koniq_ckpt-e95806b9.pth",),
        ),
        WeightSpec(
            "maniqa_koniq",
            "metric: MANIQA (KonIQ-10k), through pyiqa (optional extra iqa)",
            ("ckpt_koniq10k.pt",),
            (_PYIQA + "ckpt_koniq10k.pt",),
        ),
        WeightSpec(
            "clip_rn50",
            "metric: CLIPIQA (OpenAI CLIP RN50), through pyiqa (optional extra iqa)",
            ("RN50.pt",),
            ("https://openaipublic.azureedge.net/clip/models/"
             "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt",),
        ),
        *(
            WeightSpec(name, f"baseline (method=spandrel): {what}", (file,),
                       (url,))
            for name, what, file, url in (
                ("fbcnn_color", "FBCNN colour (Jiang et al. 2021)", "fbcnn_color.pth",
                 "https://github.com/jiaxi-jiang/FBCNN/releases/download/v1.0/fbcnn_color.pth"),
                ("fbcnn_gray", "FBCNN grayscale", "fbcnn_gray.pth",
                 "https://github.com/jiaxi-jiang/FBCNN/releases/download/v1.0/fbcnn_gray.pth"),
                *((f"swinir_color_car_q{q}", f"SwinIR-M colour JPEG artifact removal trained at QF {q}",
                   f"006_colorCAR_DFWB_s126w7_SwinIR-M_jpeg{q}.pth",
                   f"https://github.com/JingyunLiang/SwinIR/releases/download/v0.0/"
                   f"006_colorCAR_DFWB_s126w7_SwinIR-M_jpeg{q}.pth") for q in (10, 20, 30, 40)),
                ("dncnn3", "DnCNN-3 (blind denoising, super-resolution and JPEG deblocking, grayscale)", "dncnn3.pth",
                 "https://github.com/cszn/KAIR/releases/download/v1.0/dncnn3.pth"),
                ("drunet_color", "DRUNet colour denoiser", "drunet_color.pth",
                 "https://github.com/cszn/KAIR/releases/download/v1.0/drunet_color.pth"),
                ("scunet_color_real_psnr", "SCUNet colour, real-image PSNR model", "scunet_color_real_psnr.pth",
                 "https://github.com/cszn/KAIR/releases/download/v1.0/scunet_color_real_psnr.pth"),
            )
        ),
        WeightSpec(
            "guided_diffusion",
            "recipe: DDRM-JPEG prior (guided-diffusion 256x256 unconditional ImageNet)",
            ("256x256_diffusion_uncond.pt",),
            ("https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion_uncond.pt",),
        ),
    )
}


class MissingWeightsError(FileNotFoundError):
    """A pretrained file is not available locally. ``missing`` lists the file names."""

    def __init__(self, message: str, missing: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.missing = missing


class WeightStatus(NamedTuple):
    """One row of :func:`status`."""

    name: str
    used_by: str
    files: tuple[str, ...]
    found_path: Path | None


def torch_hub_checkpoints_dir() -> Path:
    """Directory where torch hub / torchvision keep downloaded checkpoints (read now from the env)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def huggingface_hub_cache_dir() -> Path:
    """Directory of the Hugging Face hub cache, following HF_HUB_CACHE / HF_HOME / XDG_CACHE_HOME."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    cache_root = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return Path(cache_root).expanduser() / "huggingface" / "hub"


def env_dirs() -> list[Path]:
    """Directories listed in $JPEGRESTORE_WEIGHTS (empty when unset)."""
    value = os.environ.get(ENV_VAR, "")
    return [Path(part).expanduser() for part in value.split(os.pathsep) if part]


def spec_for(name: str) -> WeightSpec:
    """Registry entry ``name``; ValueError listing the known names otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"unknown weights name {name!r}; known: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def _package_file(relative: str) -> Path | None:
    package, _, rest = relative.partition("/")
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        return None
    for location in found.submodule_search_locations:
        candidate = Path(location) / rest
        if candidate.is_file():
            return candidate
    return None


def _hf_snapshot(cache: Path, repo: str, marker: str) -> Path | None:
    """Snapshot directory of ``repo`` in an HF hub cache that holds ``marker``."""
    repo_dir = cache / ("models--" + repo.replace("/", "--"))
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        snapshot = repo_dir / "snapshots" / ref.read_text().strip()
        if (snapshot / marker).is_file():
            return snapshot
    snapshots = sorted((repo_dir / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime, reverse=True)
    return next((snap for snap in snapshots if (snap / marker).is_file()), None)


def _explicit(path: str | os.PathLike[str] | None, spec: WeightSpec) -> tuple[Path | None, Path | None]:
    """(explicit file for files[0], explicit directory to search) from a user path."""
    if path is None:
        return None, None
    given = Path(path).expanduser()
    if given.is_file():
        return given, given.parent
    if given.is_dir():
        return None, given
    raise MissingWeightsError(
        f"weights path for {spec.name!r} does not exist: {given} (expected a file or a directory "
        f"holding {', '.join(spec.files)})",
        spec.files,
    )


def _search_locations(spec: WeightSpec, explicit_dir: Path | None) -> list[tuple[str, Path]]:
    """(label, directory) pairs searched for plain files, in order."""
    places: list[tuple[str, Path]] = []
    if explicit_dir is not None:
        places.append(("explicit path", explicit_dir))
    places += [(f"${ENV_VAR}", d) for d in env_dirs()]
    places.append(("torch hub cache", torch_hub_checkpoints_dir()))
    return places


def _find_file(spec: WeightSpec, filename: str, explicit_dir: Path | None) -> Path | None:
    for _, directory in _search_locations(spec, explicit_dir):
        if (directory / filename).is_file():
            return directory / filename
    if filename in spec.packaged:
        return _package_file(spec.packaged[filename])
    return None


def _find_hf_repo(spec: WeightSpec, explicit_dir: Path | None) -> Path | None:
    assert spec.hf_repo is not None
    marker = spec.files[0]
    repo_name = spec.hf_repo.split("/")[-1]
    candidates = [] if explicit_dir is None else [explicit_dir]
    for directory in env_dirs():
        candidates += [directory / repo_name, directory / spec.hf_repo]
    for candidate in candidates:
        if (candidate / marker).is_file():
            return candidate
    for cache in [*env_dirs(), huggingface_hub_cache_dir()]:
        snapshot = _hf_snapshot(cache, spec.hf_repo, marker)
        if snapshot is not None:
            return snapshot
    return None


def _searched_lines(spec: WeightSpec, missing: list[str], explicit_dir: Path | None) -> list[str]:
    """Every place searched for ``spec``, in search order, one line each."""
    lines = [f"  - explicit path: {explicit_dir if explicit_dir is not None else 'none given'}"]
    env = env_dirs()
    if spec.hf_repo is not None:
        repo_name = spec.hf_repo.split("/")[-1]
        lines += [f"  - ${ENV_VAR}: {d / repo_name}, {d / spec.hf_repo}, or HF cache layout in {d}" for d in env]
    else:
        lines += [f"  - ${ENV_VAR}: {d}" for d in env]
    if not env:
        lines.append(f"  - ${ENV_VAR}: not set")
    if spec.hf_repo is not None:
        lines.append(f"  - Hugging Face cache: {huggingface_hub_cache_dir()} (repo {spec.hf_repo})")
    else:
        lines.append(f"  - torch hub cache: {torch_hub_checkpoints_dir()}")
        lines += [f"  - inside the installed package: {spec.packaged[f]}" for f in missing if f in spec.packaged]
    return lines


def _missing_message(spec: WeightSpec, missing: list[str], explicit_dir: Path | None) -> str:
    lines = [f"missing pretrained weights for {spec.name!r} ({spec.used_by}): {', '.join(missing)}", "looked in:"]
    lines += _searched_lines(spec, missing, explicit_dir)
    if spec.hf_repo is not None:
        repo_name = spec.hf_repo.split("/")[-1]
        lines.append(
            f"to fix: put a diffusers snapshot of {spec.hf_repo} (with {spec.files[0]}) into "
            f"${ENV_VAR}/{repo_name}, or copy a Hugging Face cache filled on a machine with internet "
            f"(`hf download {spec.hf_repo}`) to {huggingface_hub_cache_dir()}, or pass the directory"
        )
    else:
        lines.append(
            f"to fix: put {', '.join(missing)} into ${ENV_VAR} or {torch_hub_checkpoints_dir()}, "
            "or pass the path explicitly"
        )
    if spec.sources:
        lines.append("sources: " + "; ".join(spec.sources))
    return "\n".join(lines)


def resolve_files(name: str, path: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """Every file of registry entry ``name`` -> local path.

    ``path`` may be a file (it stands for the entry's primary file, the other files
    are also searched next to it) or a directory searched before everything else.
    Raises :class:`MissingWeightsError` listing what is missing and where it looked.
    """
    spec = spec_for(name)
    explicit_file, explicit_dir = _explicit(path, spec)
    if spec.hf_repo is not None:
        found_dir = _find_hf_repo(spec, explicit_dir)
        if found_dir is None:
            what = f"{spec.hf_repo} (a diffusers snapshot with {spec.files[0]})"
            raise MissingWeightsError(_missing_message(spec, [what], explicit_dir), (spec.hf_repo,))
        return {spec.files[0]: found_dir}
    found: dict[str, Path] = {}
    for index, filename in enumerate(spec.files):
        hit = explicit_file if index == 0 and explicit_file is not None else _find_file(spec, filename, explicit_dir)
        if hit is not None:
            found[filename] = hit
    missing = [f for f in spec.files if f not in found]
    if missing:
        raise MissingWeightsError(_missing_message(spec, missing, explicit_dir), tuple(missing))
    return found


def resolve(name: str, path: str | os.PathLike[str] | None = None) -> Path:
    """Local path of the primary file of ``name`` (a directory for Hugging Face repos).

    All files of the entry must be present; see :func:`resolve_files`.
    """
    return resolve_files(name, path)[spec_for(name).files[0]]


def locate(file_or_name: str | os.PathLike[str]) -> Path:
    """A weight file given as a registry name (``fbcnn_color``), a path, or a bare file name searched in
    $JPEGRESTORE_WEIGHTS and the torch hub cache. :class:`MissingWeightsError` naming it and the places searched."""
    text = str(file_or_name)
    if text in REGISTRY:
        return resolve(text)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    places = [*env_dirs(), torch_hub_checkpoints_dir()] if len(path.parts) == 1 else []
    for folder in places:
        if (folder / path.name).is_file():
            return folder / path.name
    searched = [str(path.resolve())] + [str(folder / path.name) for folder in places]
    raise MissingWeightsError(f"weight file {text!r} not found; searched: {', '.join(searched)}. Put it there, "
                              f"or give a registry name ({', '.join(sorted(REGISTRY))})", (text,))


def status() -> list[WeightStatus]:
    """One row per registry entry: (name, used_by, files, found primary path or None)."""
    rows = []
    for name, spec in REGISTRY.items():
        try:
            found: Path | None = resolve(name)
        except MissingWeightsError:
            found = None
        rows.append(WeightStatus(name, spec.used_by, spec.files, found))
    return rows


def format_status(rows: list[WeightStatus] | None = None) -> str:
    """Plain-text table of :func:`status` rows, plus the searched locations."""
    rows = status() if rows is None else rows
    table = [("name", "used by", "files", "found")]
    table += [(r.name, r.used_by, ", ".join(r.files), str(r.found_path) if r.found_path else "MISSING") for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths)) + "  " + row[3] for row in table]
    env = os.pathsep.join(str(d) for d in env_dirs()) or "not set"
    lines += [
        "",
        f"searched: ${ENV_VAR} ({env}), torch hub cache ({torch_hub_checkpoints_dir()}), "
        f"Hugging Face cache ({huggingface_hub_cache_dir()})",
    ]
    return "\n".join(lines)


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file (``torch.load`` with ``weights_only``), on the CPU.

    Unwraps a ``{"state_dict": ...}`` wrapper. ValueError naming the file if it is not
    a readable state dict.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"weights file not found: {file}")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip and format errors all mean "not a checkpoint"
        raise ValueError(f"cannot read weights file {file}: {error}") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"weights file {file} does not hold a state dict (got {type(state).__name__})")
    return state


def torchvision_features(arch: str, path: str | os.PathLike[str] | None = None) -> nn.Sequential:
    """``features`` part of torchvision ``alexnet`` / ``vgg16`` / ``vgg19``, loaded offline.

    Built with ``weights=None`` and filled from the resolved torchvision checkpoint
    (only its ``features.*`` tensors are needed). Returned in eval mode, frozen.
    """
    from torchvision import models

    builders = {"alexnet": (models.alexnet, "lpips_alex"), "vgg16": (models.vgg16, "vgg16"),
                "vgg19": (models.vgg19, "vgg19")}
    if arch not in builders:
        raise ValueError(f"unknown torchvision backbone {arch!r}; known: {', '.join(builders)}")
    build, entry = builders[arch]
    file = resolve_files(entry, path)[spec_for(entry).files[0]]
    with torch.device("meta"):  # no time or memory spent on random init or on the classifier
        skeleton = build(weights=None)
    features = skeleton.features.to_empty(device="cpu")
    state = load_state_dict(file)
    wanted = {key[len("features."):]: value for key, value in state.items() if key.startswith("features.")}
    try:
        features.load_state_dict(wanted, strict=True)
    except RuntimeError as error:
        raise ValueError(f"weights file {file} does not match torchvision {arch} features: {error}") from error
    features.eval().requires_grad_(False)
    return features


if __name__ == "__main__":
    print(format_status())
