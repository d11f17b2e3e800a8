"""How consistent is plain JPEG itself? The consistency metric of the decoded JPEG, per photo and size.

    python bench/jpeg_consistency.py [--qualities 5 10 50 95]

Consistency is the RMSE in gray levels between JPEG(original) and JPEG(restored) with the same tables
and 4:2:0 (``jpegrestore.metrics.jpeg_consistency``, exact libjpeg-turbo rounding). For plain JPEG the
"restored" image is the decoded JPEG, so the number measures how far re-compressing a decoded JPEG is
from idempotent. It is printed per photo (scikit-image's bundled photos) for the full image, a crop whose
sides are multiples of 16 (MCU-aligned) and a crop 5 pixels shorter on each side (not aligned).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from jpegrestore import jpeg
from jpegrestore.metrics import jpeg_consistency

PHOTOS = ["astronaut", "camera", "chelsea", "coffee", "rocket", "immunohistochemistry"]


def load(name: str) -> torch.Tensor:
    """A bundled photo as float [1, 3, H, W] in [0, 1] (grayscale repeated to RGB)."""
    import skimage.data as data

    array = getattr(data, name)()
    array = np.repeat(array[..., None], 3, 2) if array.ndim == 2 else array
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None].float() / 255


def plain_jpeg_consistency(image: torch.Tensor, quality: int) -> float:
    decoded = jpeg.compress(image, quality, rounding="exact")
    return float(jpeg_consistency(decoded, image, quality=quality)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qualities", type=int, nargs="+", default=[5, 10, 50, 95])
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    header = f"{'photo':22s} {'size':>9s} " + " ".join(f"{'QF ' + str(q):>7s}" for q in args.qualities)
    print(header)
    print("-" * len(header))
    values: list[float] = []
    for name in PHOTOS:
        image = load(name)
        height, width = image.shape[-2:]
        aligned = image[..., : 16 * min(height // 16, 16), : 16 * min(width // 16, 20)]
        unaligned = aligned[..., : aligned.shape[-2] - 5, : aligned.shape[-1] - 5]
        for crop in (image, aligned, unaligned):
            row = [plain_jpeg_consistency(crop, q) for q in args.qualities]
            values += row
            size = f"{crop.shape[-2]}x{crop.shape[-1]}"
            print(f"{name:22s} {size:>9s} " + " ".join(f"{v:7.2f}" for v in row))
    print(f"\nrange over all rows: {min(values):.2f} .. {max(values):.2f} gray levels")


if __name__ == "__main__":
    main()
