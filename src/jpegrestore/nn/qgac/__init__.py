"""QGAC architecture: CFM, RRDB, BlockNet, FrequencyNet, Y and colour nets, normalization, full model."""

from .blocknet import BlockNet
from .cfm import ConvolutionalFilterManifold
from .colornet import ColorNet
from .frequencynet import FrequencyNet, blocks_to_frequencies, frequencies_to_blocks
from .model import QGAC, init_qgac_weights, nearest_upsample_blocks
from .normalization import DCTStats, DCTStatsAccumulator, denormalize_blocks, normalize_blocks
from .rrdb import RRDB, DenseBlock, grouped_cat
from .ynet import FrequencyFusion, YNet

__all__ = [
    "QGAC",
    "BlockNet",
    "ColorNet",
    "ConvolutionalFilterManifold",
    "DCTStats",
    "DCTStatsAccumulator",
    "DenseBlock",
    "FrequencyFusion",
    "FrequencyNet",
    "RRDB",
    "YNet",
    "blocks_to_frequencies",
    "denormalize_blocks",
    "frequencies_to_blocks",
    "grouped_cat",
    "init_qgac_weights",
    "nearest_upsample_blocks",
    "normalize_blocks",
]
