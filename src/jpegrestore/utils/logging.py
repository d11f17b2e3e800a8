"""A Python logger that speaks only on the global-zero rank (so DDP runs do not print everything twice)."""

from __future__ import annotations

import logging

from lightning.pytorch.utilities import rank_zero_only


class _RankZeroFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(rank_zero_only, "rank", 0) == 0


def get_logger(name: str = "jpegrestore") -> logging.Logger:
    """Logger whose records are dropped on every rank but global rank 0."""
    logger = logging.getLogger(name)
    if not any(isinstance(f, _RankZeroFilter) for f in logger.filters):
        logger.addFilter(_RankZeroFilter())
    return logger
