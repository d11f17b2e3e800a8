"""Helpers for the training harness: config instantiation, logging setup, callbacks."""

from jpegrestore.utils.instantiate import (
    import_object,
    instantiate_callbacks,
    instantiate_loggers,
    instantiate_object,
    to_plain,
)
from jpegrestore.utils.logging import get_logger
from jpegrestore.utils.resolvers import asset_path, register_resolvers

__all__ = [
    "asset_path", "get_logger", "import_object", "instantiate_callbacks", "instantiate_loggers", "instantiate_object",
    "register_resolvers", "to_plain",
]
