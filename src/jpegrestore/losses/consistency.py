"""Consistency penalty of the posterior-sampling decoder (Man et al. 2023, Eq. 4).

``C = E_{Y,Z} ||Y - JPEG_Q(G(Z, Y))||^2``: the restoration, compressed again with the input's own quantization
tables and chroma subsampling, should decode to the input. ``JPEG_Q`` is ``jpeg.compress`` with
straight-through rounding (the paper's ``grad floor(x) = 1``), whose forward pass is bit-exact libjpeg.
"""

from __future__ import annotations

from torch import Tensor

from jpegrestore import jpeg
from jpegrestore.utils.precision import in_float32


@in_float32
def consistency_loss(restored: Tensor, jpeg_image: Tensor, tables: Tensor, subsampling: str,
                     rounding: str = "ste") -> Tensor:
    """Mean over elements of ``(jpeg_image - JPEG_Q(restored))^2`` on the [0, 1] scale. -> scalar.

    restored: [N, C, H, W] in [0, 1] (N may be P draws per input stacked: ``tables`` then repeats too).
    jpeg_image: the decoded input Y, [N, C, H, W] in [0, 1]. tables: [N, 1|2|3, 8, 8] of each input.
    A mean rather than the paper's sum keeps lambda_C independent of the crop size; multiply by 255^2 for
    squared gray levels. 0 exactly when every restoration re-encodes to the input's decoded image.
    """
    if restored.shape != jpeg_image.shape:
        raise ValueError(f"restored {tuple(restored.shape)} and JPEG image {tuple(jpeg_image.shape)} differ in shape")
    recompressed = jpeg.compress(restored, tables=tables, subsampling=subsampling, rounding=rounding)
    return (jpeg_image - recompressed).square().mean()
