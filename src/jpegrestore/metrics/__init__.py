"""Image-quality metrics for JPEG restoration.

Every per-image metric takes ``pred, target`` float [B, C, H, W] in [0, 1] and returns
Tensor[B]; callers average, so numbers never depend on the batch size.
"""

from jpegrestore.metrics.bpp import bits_per_pixel, jpeg_bytes
from jpegrestore.metrics.colour import Y_CONVENTION_NAMES, channel_label, rgb_to_y, y_convention_name
from jpegrestore.metrics.protocol import PROTOCOL_NOTE, PSNR_CEILING_DB, cap_psnr, quantize_8bit, to_8bit_levels
from jpegrestore.metrics.psnr import psnr
from jpegrestore.metrics.psnrb import blocking_effect_factor, psnrb
from jpegrestore.metrics.ssim import ssim, ssim_map
from jpegrestore.metrics.stochastic import SampleStd, sample_std
from jpegrestore.metrics.suite import METRICS, MetricInfo, MetricSuite, metric_label


def __getattr__(name: str):
    """Lazy access to the heavier metrics (networks, JPEG op) without importing them up front."""
    lazy = {
        "LPIPSMetric": "perceptual", "DISTSMetric": "perceptual", "build_fid": "fid",
        "InceptionFeatures": "fid", "RepeatedFID": "fid", "jpeg_consistency": "consistency",
    }
    if name in lazy:
        import importlib

        return getattr(importlib.import_module(f"jpegrestore.metrics.{lazy[name]}"), name)
    raise AttributeError(f"module 'jpegrestore.metrics' has no attribute {name!r}")


__all__ = [
    "psnr", "ssim", "ssim_map", "psnrb", "blocking_effect_factor", "rgb_to_y", "y_convention_name",
    "channel_label", "Y_CONVENTION_NAMES", "sample_std", "SampleStd", "bits_per_pixel", "jpeg_bytes",
    "MetricSuite", "METRICS", "MetricInfo", "metric_label", "LPIPSMetric", "DISTSMetric", "build_fid",
    "InceptionFeatures", "RepeatedFID", "jpeg_consistency", "quantize_8bit", "to_8bit_levels", "cap_psnr", "PSNR_CEILING_DB",
    "PROTOCOL_NOTE",
]
