"""CaVE, the compression-aware visual embedder of CODiff (Guo et al., 2025), stage 1 of the method.

A UNet-style encoder turns a JPEG-decoded image into a grid of visual tokens (stride 32, 512 channels at full
width). Two heads train it (the paper's "dual learning", Eq. 4-6):

- the QF predictor (explicit learning) estimates the compression level on the paper's scale (100 - QF) / 100;
- the decoder (implicit learning, training only) mirrors the encoder with skip additions and reconstructs the
  original image.

CODiff (stage 2) conditions its UNet on :meth:`CaVE.embed`. Module names follow the authors' released
``CaVE(in_nc=3, out_nc=3, nc=[64, 128, 256, 512], nb=4, act_mode="BR")`` so that
:func:`convert_authors_state_dict` is a checked renaming-free copy plus one folded constant.

Layout (``c = channels``, ``nb = blocks``)::

    m_head          conv3x3 3 -> c0
    m_down1         nb x ResBlock(c0), conv k2 s2 c0 -> c1
    m_down2         nb x ResBlock(c1), conv k4 s4 c1 -> c2
    m_down3         nb x ResBlock(c2), conv k4 s4 c2 -> c3          (total stride 32)
    m_body_encoder  nb x ResBlock(c3)                               -> tokens
    qf_pred         nb x ResBlock(c3), global mean, Linear c3-c3, ReLU, Linear c3-c3, ReLU, Linear c3-1, sigmoid
    m_body_decoder  nb x ResBlock(c3)           (+ m_down3 output)
    m_up3           convT k4 s4 c3 -> c2, nb x ResBlock(c2)         (+ m_down2 output)
    m_up2           convT k4 s4 c2 -> c1, nb x ResBlock(c1)         (+ m_down1 output)
    m_up1           convT k2 s2 c1 -> c0, nb x ResBlock(c0)         (+ m_head output)
    m_tail          conv3x3 c0 -> 3

QF head and "the mean of the tokens": the paper (Sec. 3.2.2) feeds the average token to "a lightweight CNN
cascaded to a 3-layer MLP". A 3x3 CNN on a single averaged vector would only ever use its kernels' centre taps,
and the released weights were trained with the CNN on the token grid followed by the average. We do the same:
the residual blocks run on the token grid, their output is averaged over the tokens (global average pooling)
and that mean token goes through the MLP. This is the only order under which the released weights reproduce
the authors' predictions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: downsampling factors of m_down1..3 (k2s2, k4s4, k4s4): total stride 32.
DOWN_FACTORS = (2, 4, 4)
STRIDE = 32
#: multiples CaVE pads its input to: 32 (ours, every pixel reaches a token) or 8 (the authors' code).
PAD_MULTIPLES = (STRIDE, 8)
#: the authors' decoder blocks compute x + (1 * res(x) + 1): a FiLM-style block with fixed gamma = beta = 1.
#: The constant beta is folded into the second conv's bias on conversion.
AUTHORS_DECODER_BETA = 1.0
#: sub-modules that only the reconstruction (implicit learning) uses, and those only the QF head uses.
DECODER_MODULES = ("m_body_decoder", "m_up3", "m_up2", "m_up1", "m_tail")
QF_HEAD_MODULES = ("qf_pred",)


class ResBlock(nn.Module):
    """x + conv3x3(ReLU(BN(conv3x3(x)))), channels unchanged. Sub-modules ``res.0`` conv, ``res.1`` BN,
    ``res.2`` ReLU, ``res.3`` conv (the authors' indices)."""

    def __init__(self, channels: int, bn_eps: float = 1e-4, bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.res = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels, eps=bn_eps, momentum=bn_momentum),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res(x)


class CaVE(nn.Module):
    """Compression-aware visual embedder: tokens + predicted quality, and a training-only decoder.

    Args:
        channels: widths of the four scales (paper: 64, 128, 256, 512); the last is the token size.
        blocks: residual blocks per scale, in the encoder body, the decoder body and each decoder scale (paper: 4).
        qf_blocks: residual blocks of the QF head's CNN (paper: "lightweight CNN", code: 4); None = ``blocks``.
        qf_hidden: hidden width of the QF MLP (paper: 512); None = ``channels[-1]``.
        bn_eps: BatchNorm epsilon. 1e-4 as in the authors' code (the paper does not say); the released
            weights are only reproduced with it.
        bn_momentum: BatchNorm running-statistics momentum (PyTorch convention: weight of the new batch). The
            paper does not say; the authors' code uses 0.9, which makes the running statistics little more than
            the last batch's. We use PyTorch's 0.1 so the statistics the frozen CaVE uses in stage 2 average
            over many batches. Irrelevant for converted weights (only inference uses them).
        pad_mode: how inputs are padded at the bottom/right ("replicate" as the authors, or "reflect").
        pad_multiple: the multiple the input is padded to. 32 (default, the stride): ceil(H/32) x ceil(W/32)
            tokens, every pixel reaches one. 8 (the authors' code, what their released weights run with): the
            input is padded to H8 x W8, multiples of 8, and the strided convs drop what is left over, so
            floor(H8/32) x floor(W8/32) tokens: the last (H8 mod 32) rows and (W8 mod 32) columns, up to 24,
            get no token of their own and enter only as context of the last tokens' receptive fields
            (88x120: 2x3 tokens, where 32 gives 3x4). Equal for sizes that are multiples of 32. A side shorter than 32
            after padding to 8 is padded to 32 (one token; the authors' code has none and fails). The
            decoder (stage-1 training) needs the skips to line up: with 8, H8 and W8 must be multiples of 32.
        init_gain: gain of the orthogonal initialisation of conv/linear weights (zero biases, BatchNorm scales
            uniform in [0.1, 1]); the authors' code uses orthogonal with gain 0.2, the paper does not say.
            None keeps PyTorch's default initialisation.
    """

    def __init__(
        self,
        channels: Sequence[int] = (64, 128, 256, 512),
        blocks: int = 4,
        qf_blocks: int | None = None,
        qf_hidden: int | None = None,
        bn_eps: float = 1e-4,
        bn_momentum: float = 0.1,
        pad_mode: str = "replicate",
        pad_multiple: int = STRIDE,
        init_gain: float | None = 0.2,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if len(channels) != 4 or min(channels) < 1:
            raise ValueError(f"CaVE needs four positive channel widths (one per scale), got {channels}")
        if blocks < 1:
            raise ValueError(f"CaVE needs at least one residual block per scale, got blocks={blocks}")
        if pad_mode not in ("replicate", "reflect"):
            raise ValueError(f"pad_mode must be 'replicate' or 'reflect', got {pad_mode!r}")
        if pad_multiple not in PAD_MULTIPLES:
            raise ValueError(
                f"pad_multiple must be 32 (pad to the stride) or 8 (the authors' code), got {pad_multiple!r}"
            )
        self.channels = channels
        self.blocks = blocks
        self.qf_blocks = blocks if qf_blocks is None else int(qf_blocks)
        self.pad_mode = pad_mode
        self.pad_multiple = int(pad_multiple)
        self.token_dim = channels[-1]
        hidden = channels[-1] if qf_hidden is None else int(qf_hidden)

        def res_blocks(width: int, n: int) -> list[nn.Module]:
            return [ResBlock(width, bn_eps, bn_momentum) for _ in range(n)]

        c0, c1, c2, c3 = channels
        f1, f2, f3 = DOWN_FACTORS
        self.m_head = nn.Conv2d(in_channels, c0, 3, padding=1)
        self.m_down1 = nn.Sequential(*res_blocks(c0, blocks), nn.Conv2d(c0, c1, f1, stride=f1))
        self.m_down2 = nn.Sequential(*res_blocks(c1, blocks), nn.Conv2d(c1, c2, f2, stride=f2))
        self.m_down3 = nn.Sequential(*res_blocks(c2, blocks), nn.Conv2d(c2, c3, f3, stride=f3))
        self.m_body_encoder = nn.Sequential(*res_blocks(c3, blocks))

        self.qf_pred = nn.Sequential(
            *res_blocks(c3, self.qf_blocks),
            nn.AdaptiveAvgPool2d(1),  # the mean token
            nn.Flatten(),
            nn.Linear(c3, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
            nn.Sigmoid(),
        )

        self.m_body_decoder = nn.Sequential(*res_blocks(c3, blocks))
        self.m_up3 = nn.Sequential(nn.ConvTranspose2d(c3, c2, f3, stride=f3), *res_blocks(c2, blocks))
        self.m_up2 = nn.Sequential(nn.ConvTranspose2d(c2, c1, f2, stride=f2), *res_blocks(c1, blocks))
        self.m_up1 = nn.Sequential(nn.ConvTranspose2d(c1, c0, f1, stride=f1), *res_blocks(c0, blocks))
        self.m_tail = nn.Conv2d(c0, in_channels, 3, padding=1)
        if init_gain is not None:
            self.reset_parameters(init_gain)

    @torch.no_grad()
    def reset_parameters(self, gain: float = 0.2) -> None:
        """Orthogonal conv/linear weights times ``gain``, zero biases, BatchNorm scales uniform in [0.1, 1]."""
        if any(p.is_meta for p in self.parameters()):
            return  # built under torch.device("meta"): nothing to initialise
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                nn.init.orthogonal_(module.weight, gain=gain)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.uniform_(module.weight, 0.1, 1.0)
                module.bias.zero_()

    # ------------------------------------------------------------------ encoder and heads

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or x.shape[1] != self.m_head.in_channels:
            raise ValueError(f"CaVE expects images [B, {self.m_head.in_channels}, H, W], got {tuple(x.shape)}")

    def padded_length(self, length: int) -> int:
        """The length a side of ``length`` pixels is padded to: the next multiple of ``pad_multiple``, at least 32."""
        return max(-(-length // self.pad_multiple) * self.pad_multiple, STRIDE)

    def token_grid(self, height: int, width: int) -> tuple[int, int]:
        """(rows, columns) of tokens for an H x W input: ceil(H/32) x ceil(W/32) with ``pad_multiple=32``,
        floor(H8/32) x floor(W8/32) (H8, W8: H, W padded to 8; at least 1) with 8."""
        return self.padded_length(height) // STRIDE, self.padded_length(width) // STRIDE

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Pad [B, 3, H, W] at the bottom/right to :meth:`padded_length` (``pad_mode``)."""
        h, w = x.shape[-2:]
        pad_h, pad_w = self.padded_length(h) - h, self.padded_length(w) - w
        if pad_h == 0 and pad_w == 0:
            return x
        mode = self.pad_mode
        if mode == "reflect" and (pad_h >= h or pad_w >= w):
            mode = "replicate"  # reflection needs more rows than it adds; tiny images fall back to replicate
        return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Image [B, 3, H, W] in [0, 1] -> (token map [B, C, *token_grid(H, W)], skips for the decoder).

        The skips are the outputs of m_head, m_down1, m_down2 and m_down3 (finest first).
        """
        self._check_input(x)
        x1 = self.m_head(self.pad(x))
        x2 = self.m_down1(x1)
        x3 = self.m_down2(x2)
        x4 = self.m_down3(x3)
        return self.m_body_encoder(x4), [x1, x2, x3, x4]

    @staticmethod
    def tokens_from_map(feature_map: torch.Tensor) -> torch.Tensor:
        """[B, C, h, w] -> [B, h*w, C], row-major token order."""
        return feature_map.flatten(2).transpose(1, 2)

    def predict_quality(self, feature_map: torch.Tensor) -> torch.Tensor:
        """Token map [B, C, h, w] -> predicted (100 - QF) / 100, float [B] in (0, 1)."""
        return self.qf_pred(feature_map).squeeze(1)

    def decode(
        self, feature_map: torch.Tensor, skips: Sequence[torch.Tensor], size: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """Token map + encoder skips -> reconstruction [B, 3, H, W] (not clamped).

        ``size`` = (H, W) of the unpadded input crops the result; None keeps the padded size (32h, 32w).
        """
        x1, x2, x3, x4 = skips
        if x1.shape[-2] != STRIDE * feature_map.shape[-2] or x1.shape[-1] != STRIDE * feature_map.shape[-1]:
            raise ValueError(
                f"CaVE(pad_multiple={self.pad_multiple}) dropped the input's last rows/columns from the tokens "
                f"(padded input {tuple(x1.shape[-2:])}, token grid {tuple(feature_map.shape[-2:])}), so the decoder's "
                "skips do not line up: reconstruct inputs whose sides padded to 8 are multiples of 32, or use "
                "pad_multiple=32"
            )
        x = self.m_body_decoder(feature_map) + x4
        x = self.m_up3(x) + x3
        x = self.m_up2(x) + x2
        x = self.m_up1(x) + x1
        x = self.m_tail(x)
        return x if size is None else x[..., : size[0], : size[1]]

    # ------------------------------------------------------------------ public API

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image [B, 3, H, W] in [0, 1] -> (tokens [B, N, C], quality [B] = predicted (100 - QF) / 100 in (0, 1)).

        N = rows * columns of :meth:`token_grid` (ceil(H / 32) * ceil(W / 32) by default; 64 for 256x256),
        C = ``token_dim``.
        """
        feature_map, _ = self.encode(x)
        return self.tokens_from_map(feature_map), self.predict_quality(feature_map)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Image [B, 3, H, W] in [0, 1] -> tokens [B, N, C]: what CODiff conditions on."""
        feature_map, _ = self.encode(x)
        return self.tokens_from_map(feature_map)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Image [B, 3, H, W] in [0, 1] -> decoder reconstruction [B, 3, H, W] (training head, not clamped)."""
        feature_map, skips = self.encode(x)
        return self.decode(feature_map, skips, x.shape[-2:])

    def forward_all(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One encoder pass for training: (tokens [B, N, C], quality [B], reconstruction [B, 3, H, W])."""
        feature_map, skips = self.encode(x)
        restored = self.decode(feature_map, skips, x.shape[-2:])
        return self.tokens_from_map(feature_map), self.predict_quality(feature_map), restored


def quality_target(quality: torch.Tensor) -> torch.Tensor:
    """Quality factors (int, 1..100) -> the QF head's target (100 - QF) / 100, float [B]."""
    return (100.0 - quality.float()) / 100.0


def quality_from_prediction(prediction: torch.Tensor) -> torch.Tensor:
    """The QF head's output (100 - QF) / 100 -> quality factor (float, same shape)."""
    return 100.0 - 100.0 * prediction


def _decoder_block_bias_keys(blocks: int) -> list[str]:
    """Keys of the second conv bias of every decoder-scale block (where the authors' beta = 1 goes)."""
    return [f"m_up{scale}.{i}.res.3.bias" for scale in (3, 2, 1) for i in range(1, blocks + 1)]


def convert_authors_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The authors' released CaVE state dict -> a state dict for ``CaVE()`` (paper widths, 4 blocks).

    Their module names equal ours; their decoder blocks add a constant beta = 1 to the residual (their
    ``QFAttention`` with fixed gamma = beta = 1), which becomes + 1 on the bias of each decoder block's second
    conv. Load the result with ``CaVE(bn_eps=1e-4).load_state_dict(..., strict=True)`` (the defaults).

    Raises:
        ValueError: naming the missing, unexpected or mis-shaped keys when ``state`` is not in the layout of
            ``CaVE(in_nc=3, out_nc=3, nc=[64, 128, 256, 512], nb=4, act_mode="BR")``.
    """
    state = dict(state)
    if any(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    with torch.device("meta"):
        reference = CaVE(init_gain=None).state_dict()
    missing = sorted(set(reference) - set(state))
    unexpected = sorted(set(state) - set(reference))
    wrong_shape = sorted(
        f"{k}: {tuple(state[k].shape)} instead of {tuple(reference[k].shape)}"
        for k in set(reference) & set(state)
        if tuple(state[k].shape) != tuple(reference[k].shape)
    )
    if missing or unexpected or wrong_shape:
        def listing(name: str, keys: list[str]) -> str:
            return f"{len(keys)} {name} (e.g. {', '.join(keys[:4])})" if keys else ""

        parts = (listing("missing", missing), listing("unexpected", unexpected), listing("mis-shaped", wrong_shape))
        problems = "; ".join(p for p in parts if p)
        raise ValueError(
            "not a state dict of the authors' CaVE(in_nc=3, out_nc=3, nc=[64, 128, 256, 512], nb=4, "
            f"act_mode='BR'): {problems}"
        )
    converted = {k: state[k].detach().clone() for k in reference}
    for key in _decoder_block_bias_keys(4):
        converted[key] = converted[key] + AUTHORS_DECODER_BETA
    return converted
