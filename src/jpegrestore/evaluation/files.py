"""Restore JPEG files into PNG files with a restoration method: what ``jpegrestore restore`` and the demo page
write for each file (one PNG, or one per draw of a stochastic method plus a map of their spread)."""

from __future__ import annotations

import sys
from pathlib import Path


def note(message: str) -> None:
    """A message for the person running the command, on stderr (above any progress bar)."""
    from tqdm.auto import tqdm

    tqdm.write(f"jpegrestore: {message}", file=sys.stderr)


def sample_paths(target: Path, num_samples: int) -> list[Path]:
    """Output PNGs of ``num_samples`` draws for ``target``: itself for one draw, else ``<stem>_s<k>.png``."""
    if num_samples == 1:
        return [target]
    return [target.with_name(f"{target.stem}_s{k}.png") for k in range(num_samples)]


def restore_file(method, source: Path, target: Path, project: bool, device, num_samples: int = 1,
                 std_map: bool = False, seed: int = 0) -> None:
    """Restore one JPEG file into one PNG (or ``num_samples`` PNGs of a stochastic method, plus a std map).

    Raises OSError/ValueError (naming the file) when it cannot.
    """
    import torch

    from jpegrestore import jpeg
    from jpegrestore.evaluation.grids import save_png

    coeffs = jpeg.read(source).to(device)
    with torch.no_grad():
        jpeg_image = jpeg.decode(coeffs, rounding="exact")
        if num_samples == 1:
            draws = method(coeffs, jpeg_image)[None]
        elif getattr(method, "keyed_noise", False):  # seeds each file's draws itself: draw 0 is the 1-sample output
            draws = method.sample(coeffs, jpeg_image, num_samples)
        else:
            generator = torch.Generator(device=jpeg_image.device).manual_seed(seed)
            draws = method.sample(coeffs, jpeg_image, num_samples, generator=generator)
        draws = draws.to(device, torch.float32).clamp(0, 1)
        if draws.shape[1:] != jpeg_image.shape:
            raise ValueError(f"{source}: restored shape {tuple(draws.shape[1:])} != JPEG {tuple(jpeg_image.shape)}")
        if project:
            draws = torch.stack([jpeg.project(draw, coeffs) for draw in draws])
    for draw, path in zip(draws, sample_paths(target, num_samples)):
        save_png(draw[0], path)
    if std_map:
        from jpegrestore.metrics import sample_std

        spread = sample_std(draws).std_map[0].mean(0, keepdim=True)
        peak = float(spread.max())
        save_png(spread / peak if peak > 0 else spread, target.with_name(f"{target.stem}_std.png"))
        note(f"{source}: per-pixel std over {num_samples} draws: mean {float(spread.mean()):.4f}, "
               f"max {peak:.4f} (0..1 scale; white in {target.stem}_std.png)")
