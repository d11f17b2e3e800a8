"""DDRM-JPEG (Kawar et al., "JPEG Artifact Correction using Denoising Diffusion Restoration Models", 2022):
training-free JPEG restoration with any unconditional epsilon-prediction diffusion prior.

One step at timestep t, next timestep s (abar_{-1} = 1), images in [-1, 1], H / H+ the measurement operator
and its right inverse (``measurements``), yhat = H+(y)::

    e  = eps(x, t)[:, :C]                                       # learned-variance channels dropped
    x0 = (x - sqrt(1 - abar_t) e) / sqrt(abar_t)                # not clipped
    xp = x0 - H+(H(x0)) + yhat                                  # observed part replaced by the measurement
    x  = sqrt(abar_s) (eta_b xp + (1 - eta_b) x0) + sqrt(1 - abar_s) (eta n + (1 - eta) e),  n ~ N(0, I)

starting from x = sqrt(abar_t0) yhat + sqrt(1 - abar_t0) n at the first timestep t0; the output is the last
step's mix ``eta_b xp + (1 - eta_b) x0`` (abar_{-1} = 1). This is the update of the authors' code; the
paper's defaults are 20 steps 15 apart below t = 300 (timesteps 285, 270, ..., 0), eta = 1, eta_b = 0.4.

Any size: the sampler works on the MCU canvas the coefficients describe (where H(H+(y)) == y holds
exactly), padded further by edge replication to the prior's ``size_multiple`` (or to its fixed
``image_size``); the padding beyond the canvas is unobserved (H ignores it, H+ extends the decode by
replication). The result is cropped back to the image. Images larger than ``tile`` are restored in
MCU-aligned tiles blended with ramps (:func:`jpegrestore.tiling.restore_tiled`). A grayscale JPEG
restored with an RGB prior is measured through the luma of the drawn RGB image, and the result is that luma.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional, Union

import torch
from torch import Tensor, nn

from jpegrestore import jpeg
from jpegrestore.jpeg.sampling import pad_edge
from jpegrestore.sampling.authors_jpeg import AuthorsJPEGMeasurement
from jpegrestore.sampling.measurements import JPEGMeasurement, QuantizationMeasurement

EpsModel = Callable[[Tensor, Tensor], Tensor]
MODES = ("jpeg", "dequantize")
#: Measurement operators of mode "jpeg": ``float`` (jpeg.float_encode / float_decode: 2x2-average chroma, exact
#: JFIF colour, any layout; fits real libjpeg files) and ``authors`` (the authors' code: top-left chroma, 4-digit
#: colour, 4:2:0 only; :mod:`jpegrestore.sampling.authors_jpeg`).
OPERATORS = ("float", "authors")
_ALIGN = 16  # tiles start on the 16-pixel grid (jpegrestore.tiling.ALIGN)


def _ceil_to(n: int, m: int) -> int:
    return -(-n // m) * m


def check_alphas_cumprod(alphas_cumprod: Any, t_start: int) -> Tensor:
    """abar as float64 Tensor[T]; ValueError unless 1-D, finite, in (0, 1], non-increasing, with T >= t_start."""
    if alphas_cumprod is None:
        raise ValueError("alphas_cumprod is missing: the prior needs its scheduler's betas "
                         "(alphas_cumprod[t] = prod_{i<=t} (1 - beta_i))")
    abar = torch.as_tensor(alphas_cumprod).detach().to("cpu", torch.float64)
    if abar.dim() != 1 or abar.numel() < 2:
        raise ValueError("alphas_cumprod must be a 1-D tensor of the T training timesteps, "
                         f"got shape {tuple(abar.shape)}")
    if not bool(torch.isfinite(abar).all()) or bool((abar <= 0).any()) or bool((abar > 1).any()):
        raise ValueError("alphas_cumprod must hold values in (0, 1] (cumulative products of 1 - beta)")
    if bool((abar[1:] > abar[:-1]).any()):
        raise ValueError("alphas_cumprod must be non-increasing in t (did you pass betas or alphas?)")
    if abar.numel() < t_start:
        raise ValueError(f"t_start={t_start} exceeds the prior's {abar.numel()} diffusion timesteps")
    return abar


def _model_device(eps_model: EpsModel) -> Optional[torch.device]:
    if isinstance(eps_model, nn.Module):
        for p in eps_model.parameters():
            return p.device
    return None


class DDRMJPEG:
    """The DDRM-JPEG sampler.

    Args:
        eps_model: ``eps_model(x, t) -> [B, C or 2C, H, W]`` for x in [-1, 1] [B, C, H, W] and t Long[B].
            Extra (learned-variance) channels are dropped.
        alphas_cumprod: Tensor[T], abar_t of the prior's training schedule (index t = 0..T-1).
        steps: number of denoising steps S (paper: 20).
        t_start: T0, the steps are ``t_start // steps`` apart below it (paper: 300): timesteps
            (S-1)k, ..., k, 0 with k = T0 // S. The authors' code takes ``range(0, T0, k)``, which has more
            than S entries when S does not divide T0; here it is always exactly S.
        eta: weight of fresh noise against the predicted noise in the re-noising (paper: 1.0).
        eta_b: weight of the measurement-consistent x0 against the prior's x0 (paper: 0.4).
        mode: "jpeg" (the measurement is a ``jpeg.Coefficients``) or "dequantize" (the paper's Fig. 2
            variant: ``levels`` levels per channel of an image, identity pseudo-inverse).
        levels: levels per channel of the dequantization variant (paper: 8).
        channels: channels the prior models (None: not checked before the first network call).
        size_multiple: H and W the network needs to be a multiple of.
        image_size: the one square size the network takes (None: any multiple of ``size_multiple``).
        tile: images with a side larger than this (pixels, multiple of 16) are restored in tiles (mode
            "jpeg"); None: never, unless ``image_size`` forces it.
        tile_overlap: overlap of neighbouring tiles in pixels.
        operator: H and H+ of mode "jpeg" (:data:`OPERATORS`): "float" (default) or "authors" (their
            code's operator, for their simulated measurement ``authors_jpeg.AuthorsCompression``).
    Attributes:
        network_evaluations: running count of network evaluations, one per image per call of the network.
    """

    def __init__(
        self, eps_model: EpsModel, alphas_cumprod: Tensor, steps: int = 20, t_start: int = 300,
        eta: float = 1.0, eta_b: float = 0.4, mode: str = "jpeg", levels: int = 8,
        channels: Optional[int] = None, size_multiple: int = 1, image_size: Optional[int] = None,
        tile: Optional[int] = None, tile_overlap: int = 32, operator: str = "float",
    ) -> None:
        if not callable(eps_model):
            raise ValueError(f"eps_model must be callable as eps_model(x, t), got {type(eps_model).__name__}")
        for name, value in (("steps", steps), ("t_start", t_start)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if steps > t_start:
            raise ValueError(f"steps={steps} is larger than t_start={t_start}: the steps are t_start // steps apart")
        for name, value in (("eta", eta), ("eta_b", eta_b)):
            if not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if operator not in OPERATORS:
            raise ValueError(f"operator must be one of {OPERATORS}, got {operator!r}")
        if int(size_multiple) < 1:
            raise ValueError(f"size_multiple must be >= 1, got {size_multiple!r}")
        self.eps_model = eps_model
        self.alphas_cumprod = check_alphas_cumprod(alphas_cumprod, t_start)
        self.steps, self.t_start = steps, t_start
        self.eta, self.eta_b = float(eta), float(eta_b)
        self.mode, self.operator, self.levels = mode, operator, levels
        self.channels = channels
        self.size_multiple = int(size_multiple)
        self.image_size = None if image_size is None else int(image_size)
        self.tile = self._effective_tile(tile)
        # A tile forced by image_size may be smaller than twice the requested overlap.
        self.tile_overlap = min(tile_overlap, self.tile // 2) if self.tile and self.image_size else tile_overlap
        self.network_evaluations = 0

    @classmethod
    def from_prior(cls, prior: Any, **options: Any) -> "DDRMJPEG":
        """A sampler over a ``DiffusionPrior`` (``eps_model``, ``alphas_cumprod``, ``channels``,
        ``size_multiple``, ``image_size``); ``options`` as in the constructor."""
        return cls(prior.eps_model, prior.alphas_cumprod, channels=getattr(prior, "channels", None),
                   size_multiple=getattr(prior, "size_multiple", 1) or 1,
                   image_size=getattr(prior, "image_size", None), **options)

    def _effective_tile(self, tile: Optional[int]) -> Optional[int]:
        if self.image_size is None:
            return tile or None
        # Tiles are up to tile + 15 pixels long and their MCU canvas must fit the fixed network size.
        largest = (self.image_size - _ALIGN) // _ALIGN * _ALIGN
        if largest < _ALIGN:
            raise ValueError(f"image_size {self.image_size} of the prior is too small to tile (needs >= 32)")
        return min(tile, largest) if tile else largest

    # ------------------------------------------------------------------------------ schedule

    def timesteps(self) -> list[tuple[int, int]]:
        """[(t, next t)] from (S-1)k down to 0, k = t_start // steps; the last next is -1 (abar = 1)."""
        skip = self.t_start // self.steps
        taus = [i * skip for i in reversed(range(self.steps))]
        return list(zip(taus, taus[1:] + [-1]))

    def abar(self, t: int) -> float:
        """abar_t, with abar_{-1} = 1."""
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    # ------------------------------------------------------------------------------ one step

    def predict_eps(self, x: Tensor, t: int) -> Tensor:
        """eps(x, t) with extra (learned-variance) channels dropped. [B, C, H, W] -> [B, C, H, W]."""
        c = x.shape[1]
        out = self.eps_model(x, torch.full((x.shape[0],), t, dtype=torch.long, device=x.device))
        if not torch.is_tensor(out) or out.dim() != 4 or out.shape[0] != x.shape[0] or out.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"eps_model returned {getattr(out, 'shape', type(out).__name__)} for input "
                             f"{tuple(x.shape)}; expected [B, C or 2C, H, W]")
        if out.shape[1] not in (c, 2 * c):
            raise ValueError(f"the prior predicts {out.shape[1]} channels for {c}-channel images "
                             f"(expected {c}, or {2 * c} with learned variance): its channels do not fit")
        self.network_evaluations += x.shape[0]
        return out[:, :c].to(x.dtype)

    def step(self, x: Tensor, t: int, t_next: int, consistent: Callable[[Tensor], Tensor],
             noise: Tensor) -> tuple[Tensor, Tensor]:
        """One update from timestep t to t_next. -> (x at t_next, the mix eta_b xp + (1 - eta_b) x0).

        ``consistent(x0)`` is ``x0 - H+(H(x0)) + yhat``; ``noise`` the fresh N(0, I) draw of this step.
        """
        a_t, a_s = self.abar(t), self.abar(t_next)
        e = self.predict_eps(x, t)
        x0 = (x - (1 - a_t) ** 0.5 * e) / a_t ** 0.5
        xp = consistent(x0)
        mix = self.eta_b * xp + (1 - self.eta_b) * x0
        x_next = a_s ** 0.5 * mix + (1 - a_s) ** 0.5 * (self.eta * noise + (1 - self.eta) * e)
        return x_next, mix

    # ------------------------------------------------------------------------------ whole run

    def _network_canvas(self, canvas: tuple[int, int]) -> tuple[int, int]:
        if self.image_size is not None:
            if max(canvas) > self.image_size:
                raise ValueError(f"an image of canvas {canvas} does not fit the prior's image_size "
                                 f"{self.image_size} (tile it: tile=...)")
            return self.image_size, self.image_size
        return _ceil_to(canvas[0], self.size_multiple), _ceil_to(canvas[1], self.size_multiple)

    def _check_channels(self, channels: int) -> None:
        if self.channels is not None and self.channels != channels:
            raise ValueError(f"the prior models {self.channels}-channel images but the measurement has "
                             f"{channels} channel(s); use a {channels}-channel prior")

    def _run(self, op: Union[JPEGMeasurement, QuantizationMeasurement], device: torch.device,
             generator: Optional[torch.Generator]) -> Tensor:
        """One draw: [B, C, H, W] in [0, 1] (clamped, cropped)."""
        height, width = self._network_canvas(op.canvas)
        ch, cw = op.canvas
        shape = (op.batch_size, op.channels, height, width)
        yhat = pad_edge(op.pinv(op.y), height, width).to(device)

        def consistent(x0: Tensor) -> Tensor:
            back = op.pinv(op.forward(x0[..., :ch, :cw]))
            return x0 - pad_edge(back, height, width) + yhat

        def draw() -> Tensor:
            where = generator.device if generator is not None else device
            return torch.randn(shape, generator=generator, device=where).to(device)

        schedule = self.timesteps()
        a0 = self.abar(schedule[0][0])
        x = a0 ** 0.5 * yhat + (1 - a0) ** 0.5 * draw()
        mix = x
        for t, t_next in schedule:
            x, mix = self.step(x, t, t_next, consistent, draw())
        return op.output(((mix[..., : op.size[0], : op.size[1]] + 1) / 2).clamp(0, 1))

    def _draws(self, measurement: Any, num_samples: int, generator: Optional[torch.Generator]) -> Tensor:
        """[S, B, C, H, W] for one (untiled) measurement."""
        if self.mode == "jpeg" and not isinstance(measurement, jpeg.Coefficients):
            raise ValueError(f"mode='jpeg' measures jpeg.Coefficients, got {type(measurement).__name__}")
        device = _model_device(self.eps_model) or measurement.device
        measurement = measurement.to(device)
        if self.mode == "jpeg" and self.operator == "authors":
            op = AuthorsJPEGMeasurement(measurement)
        elif self.mode == "jpeg":
            op = JPEGMeasurement(measurement, rgb_prior=self.channels == 3)
        else:
            op = QuantizationMeasurement(measurement, self.levels)
        self._check_channels(op.channels)
        return torch.stack([self._run(op, device, generator) for _ in range(num_samples)])

    @torch.no_grad()
    def __call__(
        self, measurement: Union[jpeg.Coefficients, Tensor], num_samples: int = 1,
        generator: Optional[torch.Generator] = None, return_samples: bool = False,
    ) -> Tensor:
        """Restore a batch.

        Args:
            measurement: mode "jpeg": ``jpeg.Coefficients`` (batch B, any size and layout); mode
                "dequantize": images [B, C, H, W] in [0, 1] (their ``levels`` levels are the measurement).
            num_samples: independent draws S.
            generator: source of every random draw (start noise, then one draw per step, per sample, per tile).
            return_samples: return every draw instead of their mean.
        Returns:
            [B, C, H, W] in [0, 1], the mean of the S draws (each clamped to [0, 1] first), on the model's
            device; or [S, B, C, H, W] with ``return_samples``.
        """
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
        size = measurement.size if isinstance(measurement, jpeg.Coefficients) else tuple(measurement.shape[-2:])
        if self.mode == "jpeg" and isinstance(measurement, jpeg.Coefficients) and self.tile and max(size) > self.tile:
            samples = self._tiled(measurement, num_samples, generator)
        else:
            if self.mode == "dequantize" and self.image_size is not None and max(size) > self.image_size:
                raise ValueError(f"mode='dequantize' does not tile: an image of {size} does not fit the prior's "
                                 f"image_size {self.image_size}")
            samples = self._draws(measurement, num_samples, generator)
        return samples if return_samples else samples.mean(0)

    def _tiled(self, coeffs: jpeg.Coefficients, num_samples: int, generator: Optional[torch.Generator]) -> Tensor:
        from jpegrestore.tiling import restore_tiled

        def restore(part: jpeg.Coefficients) -> Tensor:  # draws folded into channels: [B, S*C, h, w]
            draws = self._draws(part, num_samples, generator)
            return draws.permute(1, 0, 2, 3, 4).flatten(1, 2)

        blended = restore_tiled(restore, coeffs, self.tile, self.tile_overlap)
        b, _, h, w = blended.shape
        return blended.reshape(b, num_samples, -1, h, w).permute(1, 0, 2, 3, 4)
