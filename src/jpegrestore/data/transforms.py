"""Crops (grid-aligned or grid-misaligned), flips, 90-degree rotations and luma, on uint8 [H, W, C] arrays.

"Aligned" means the crop offset is a multiple of 8 in both directions, so the JPEG block grid of the crop
coincides with the grid of the source image; "misaligned" means at least one offset is not a multiple of 8.
"""

from __future__ import annotations

import numpy as np

BLOCK = 8


def _aligned_start(rng: np.random.Generator, slack: int, shift: int) -> int:
    """A start ``8 * a + shift`` with ``0 <= start <= slack``, ``a`` uniform."""
    return BLOCK * int(rng.integers((slack - shift) // BLOCK + 1)) + shift


def random_crop_offset(
    rng: np.random.Generator, height: int, width: int, size: int, misalign: bool = False
) -> tuple[int, int]:
    """(top, left) of a ``size`` x ``size`` crop inside a ``height`` x ``width`` image.

    Aligned: both offsets are multiples of 8. Misaligned: the grid shift (top % 8, left % 8) is drawn
    uniformly from the feasible shifts other than (0, 0); when the image leaves no room to shift (it is less
    than one pixel larger than the crop), the crop is aligned.
    """
    slack_y, slack_x = height - size, width - size
    if slack_y < 0 or slack_x < 0:
        raise ValueError(f"crop {size}x{size} does not fit an image of {height}x{width}")
    shift_y = shift_x = 0
    if misalign:
        shifts = [
            (sy, sx)
            for sy in range(min(BLOCK - 1, slack_y) + 1)
            for sx in range(min(BLOCK - 1, slack_x) + 1)
            if (sy, sx) != (0, 0)
        ]
        if shifts:
            shift_y, shift_x = shifts[int(rng.integers(len(shifts)))]
    return _aligned_start(rng, slack_y, shift_y), _aligned_start(rng, slack_x, shift_x)


def center_crop_offset(height: int, width: int, size: int) -> tuple[int, int]:
    """(top, left) of the centred crop, rounded down to multiples of 8 (keeps the block grid aligned)."""
    if height < size or width < size:
        raise ValueError(f"crop {size}x{size} does not fit an image of {height}x{width}")
    return ((height - size) // 2) // BLOCK * BLOCK, ((width - size) // 2) // BLOCK * BLOCK


def crop(image: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    """[H, W, C] -> [size, size, C] view."""
    return image[top : top + size, left : left + size]


def random_flip_rotate(
    image: np.ndarray, rng: np.random.Generator, flips: bool = True, rotations: bool = True
) -> np.ndarray:
    """Random horizontal/vertical flips (p = 1/2 each) and a rotation by k * 90 degrees (k uniform in 0..3).

    The draws happen whatever the options, so toggling one option does not change the others' stream.
    A square crop whose size is a multiple of 8 keeps its block-grid alignment.
    """
    flip_h, flip_v = rng.random(2) < 0.5
    quarter_turns = int(rng.integers(4))
    if flips and flip_h:
        image = image[:, ::-1]
    if flips and flip_v:
        image = image[::-1]
    if rotations and quarter_turns:
        image = np.rot90(image, quarter_turns, axes=(0, 1))
    return image


def rgb_to_luma(image: np.ndarray) -> np.ndarray:
    """uint8 RGB [H, W, 3] -> uint8 Y [H, W, 1] with JFIF weights (0.299, 0.587, 0.114), rounded."""
    y = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)[:, :, None]


def to_tensor_image(image: np.ndarray):
    """uint8 [H, W, C] -> float32 torch tensor [C, H, W] in [0, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)).div_(255.0)
