"""Validate images with Pillow, skip bad ones and count them by reason.

A file is skipped when it is not an image, is truncated or corrupt, is CMYK, has 16 bits per sample, has a
mode that is not plain grey/RGB(A)/palette, or is smaller than the crop. Truncation is detected locally (a
read that reaches the end of the data while Pillow decodes), so it is caught whatever value other code gave
``PIL.ImageFile.LOAD_TRUNCATED_IMAGES``; this module never changes that global.
"""

from __future__ import annotations

import io
import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np
import torch
from PIL import Image, ImageFile

if TYPE_CHECKING:
    from .sources import ImageSource

log = logging.getLogger(__name__)

# Order matters only for the summary line.
REASONS = (
    "not an image", "corrupt", "truncated", "cmyk", "16-bit", "unsupported mode", "smaller than crop",
)
CONVERTIBLE_MODES = {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "YCbCr"}
_IMAGE_SIGNATURES = (b"\xff\xd8", b"\x89PNG", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")  # + RIFF....WEBP


class BadImageError(ValueError):
    """An image that cannot be used; ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: str, where: str, detail: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown skip reason {reason!r}")
        self.reason = reason
        self.where = where
        super().__init__(f"{where}: {reason}" + (f" ({detail})" if detail else ""))


class _EndWatchingReader:
    """File-object wrapper that records whether reads reached the end of the data.

    ``hit_end``: a read returned nothing; ``short_read``: a read returned fewer bytes than asked for.
    """

    def __init__(self, raw) -> None:
        self._raw = raw
        self.hit_end = False
        self.short_read = False

    def _note(self, data: bytes, size: int) -> bytes:
        if size != 0 and not data:
            self.hit_end = True
        if size is not None and size > 0 and len(data) < size:
            self.short_read = True
        return data

    def read(self, size: int = -1) -> bytes:
        return self._note(self._raw.read(size), size)

    def readline(self, size: int = -1) -> bytes:
        data = self._raw.readline(size)
        if size != 0 and not data:
            self.hit_end = True
        return data

    def __getattr__(self, name: str):
        return getattr(self._raw, name)


_warned_about_global = False


def _warn_if_truncated_images_allowed() -> None:
    global _warned_about_global
    if ImageFile.LOAD_TRUNCATED_IMAGES and not _warned_about_global:
        _warned_about_global = True
        log.warning(
            "PIL.ImageFile.LOAD_TRUNCATED_IMAGES was set to True by other code: truncated files are still "
            "detected, but Pillow now hides decoder errors, so some corrupt files may load as garbage"
        )


def _has_image_signature(raw) -> bool:
    raw.seek(0)
    head = raw.read(12)
    return head.startswith(_IMAGE_SIGNATURES) or (head.startswith(b"RIFF") and head[8:12] == b"WEBP")


def _is_16_bit(image: Image.Image) -> bool:
    if image.mode.startswith("I;16"):
        return True
    tiles = getattr(image, "tile", None)
    if not tiles:
        return False
    args = tiles[0].args
    rawmode = args if isinstance(args, str) else (args[0] if isinstance(args, tuple) and args else "")
    return isinstance(rawmode, str) and ";16" in rawmode


def _check_mode(image: Image.Image, where: str) -> None:
    if image.mode == "CMYK":
        raise BadImageError("cmyk", where)
    if _is_16_bit(image):
        raise BadImageError("16-bit", where, f"mode {image.mode}")
    if image.mode not in CONVERTIBLE_MODES:
        raise BadImageError("unsupported mode", where, f"mode {image.mode}")


def _check_size(size: tuple[int, int], min_size: int, where: str) -> None:
    if min(size) < min_size:
        raise BadImageError("smaller than crop", where, f"{size[0]}x{size[1]} < {min_size}")


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    if image.mode in ("P", "PA") and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode != "RGB":
        image = image.convert("RGB")  # alpha is dropped
    return np.asarray(image, dtype=np.uint8)


def decode_rgb(opened, where: str, min_size: int = 1, header_only: bool = False) -> Optional[np.ndarray]:
    """Decode one image to uint8 [H, W, 3] RGB, or raise BadImageError naming ``where`` and the reason.

    ``opened`` is a binary file object, bytes, an already decoded PIL image, or a uint8 [H, W, 3] array
    (returned as is, read-only arrays included). With ``header_only`` only the header checks run (mode, size)
    and None is returned.
    """
    if isinstance(opened, np.ndarray):
        if opened.dtype != np.uint8 or opened.ndim != 3 or opened.shape[2] != 3:
            raise BadImageError("unsupported mode", where, f"array {opened.dtype} {opened.shape}")
        _check_size(opened.shape[1::-1], min_size, where)
        return None if header_only else opened
    if isinstance(opened, Image.Image):
        _check_mode(opened, where)
        _check_size(opened.size, min_size, where)
        return None if header_only else _to_rgb_array(opened)
    if isinstance(opened, (bytes, bytearray, memoryview)):
        opened = io.BytesIO(opened)
    _warn_if_truncated_images_allowed()
    reader = _EndWatchingReader(opened)
    try:
        image = Image.open(reader)
    except Exception as error:  # Pillow raises many types on malformed headers
        if not _has_image_signature(reader._raw):
            raise BadImageError("not an image", where) from error
        ended = reader.hit_end or reader.short_read
        raise BadImageError("truncated" if ended else "corrupt", where, str(error)) from error
    with image:
        _check_mode(image, where)
        _check_size(image.size, min_size, where)
        if header_only:
            return None
        reader.hit_end = False
        try:
            image.load()
        except Exception as error:
            raise BadImageError("truncated" if reader.hit_end else "corrupt", where, str(error)) from error
        if reader.hit_end:  # only reachable when someone set ImageFile.LOAD_TRUNCATED_IMAGES = True
            raise BadImageError("truncated", where)
        return _to_rgb_array(image)


def load_rgb(
    source: "ImageSource", index: int, min_size: int = 1, header_only: bool = False
) -> Optional[np.ndarray]:
    """Item ``index`` of ``source`` as uint8 [H, W, 3]; raises BadImageError (with reason) when unusable.

    With ``header_only`` only the cheap checks run and None is returned.
    """
    where = source.describe(index)
    try:
        opened = source.open(index)
    except OSError as error:
        raise BadImageError("corrupt", where, f"cannot open: {error}") from error
    try:
        return decode_rgb(opened, where, min_size, header_only=header_only)
    finally:
        if not isinstance(opened, (Image.Image, np.ndarray)) and hasattr(opened, "close"):
            opened.close()


def _skip_reason(source: "ImageSource", index: int, min_size: int, header_only: bool) -> Optional[str]:
    try:
        load_rgb(source, index, min_size, header_only)
        return None
    except BadImageError as error:
        return error.reason


class ScanReport:
    """Which items of a source are usable, and how many were skipped for which reason.

    Failures found later, while loading in DataLoader workers, are recorded in a shared-memory tensor so the
    main process sees them: ``counts()`` and ``summary()`` include them.
    """

    def __init__(self, where: str, total: int, reasons: dict[int, str], min_size: int) -> None:
        self.where = where
        self.total = total
        self.min_size = min_size
        self.scan_reasons = dict(reasons)
        self.usable = [i for i in range(total) if i not in reasons]
        # 0 = fine, k = REASONS[k - 1]; indexed by position in ``usable``
        self.load_failures = torch.zeros(len(self.usable), dtype=torch.int8).share_memory_()

    def record_load_failure(self, position: int, reason: str) -> None:
        """Mark usable item ``position`` as failed at load time (safe to call from workers)."""
        self.load_failures[position] = REASONS.index(reason) + 1

    def has_failed(self, position: int) -> bool:
        return bool(self.load_failures[position] != 0)

    def counts(self) -> dict[str, int]:
        """Skipped files per reason (scan time plus load time), reasons in ``REASONS`` order, zeros left out."""
        counter = Counter(self.scan_reasons.values())
        codes = torch.bincount(self.load_failures.long(), minlength=len(REASONS) + 1).tolist()
        for code, count in enumerate(codes[1:]):
            counter[REASONS[code]] += count
        return {reason: counter[reason] for reason in REASONS if counter[reason]}

    @property
    def num_skipped(self) -> int:
        return sum(self.counts().values())

    def summary(self) -> str:
        """E.g. ``skipped 3 of 12 files in /data: 2 corrupt, 1 smaller than crop 256``."""
        counts = self.counts()
        text = f"skipped {sum(counts.values())} of {self.total} files in {self.where}"
        if counts:
            parts = [
                f"{n} {reason}" + (f" {self.min_size}" if reason == "smaller than crop" else "")
                for reason, n in counts.items()
            ]
            text += ": " + ", ".join(parts)
        return text

    def __repr__(self) -> str:
        return f"ScanReport({self.summary()!r})"


def scan_source(source: "ImageSource", min_size: int = 1, mode: str = "full", workers: int = 4) -> ScanReport:
    """Check every item of ``source`` once.

    Args:
        min_size: the smallest allowed min(H, W) (the crop size).
        mode: "full" decodes every image (finds truncated/corrupt files now); "header" only opens them
            (fast; decoding errors are then found and counted at load time).
        workers: threads used for decoding (Pillow releases the GIL while decoding).

    Raises ValueError naming the source and the reasons when no item is usable.
    """
    if mode not in ("full", "header"):
        raise ValueError(f"scan mode must be 'full' or 'header', got {mode!r}")
    check: Callable[[int], Optional[str]] = lambda i: _skip_reason(source, i, min_size, mode == "header")
    total = len(source)
    if workers > 1 and total > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(check, range(total)))
    else:
        results = [check(i) for i in range(total)]
    report = ScanReport(source.where, total, {i: r for i, r in enumerate(results) if r is not None}, min_size)
    if not report.usable:
        detail = report.summary() if total else f"no image files found in {source.where}"
        raise ValueError(f"no usable image in {source.where}: {detail}")
    return report
