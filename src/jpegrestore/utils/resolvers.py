"""OmegaConf resolvers used by the configs (registered when ``jpegrestore.utils`` is imported).

``${jr_asset:name}``: absolute path of a file shipped in ``jpegrestore/assets/`` (FileNotFoundError if absent).
``${jr_floordiv:a,b}``: ``a // b`` for ints, e.g. ``${jr_floordiv:${trainer.max_steps},2}``, the generator iterations of
a GAN recipe whose ``global_step`` counts a critic and a generator step per batch.
"""

from __future__ import annotations

from importlib import resources

from omegaconf import OmegaConf


def asset_path(name: str) -> str:
    """Absolute path of ``jpegrestore/assets/<name>``; FileNotFoundError naming it when missing."""
    path = resources.files("jpegrestore") / "assets" / name
    if not path.is_file():
        raise FileNotFoundError(f"packaged asset not found: {path} (expected in src/jpegrestore/assets/)")
    return str(path)


def floor_division(numerator: int, denominator: int) -> int:
    """``numerator // denominator`` for ints (ValueError naming both otherwise, or for a denominator <= 0)."""
    if any(isinstance(v, bool) or not isinstance(v, int) for v in (numerator, denominator)) or denominator <= 0:
        raise ValueError(f"jr_floordiv needs an int and a positive int, got {numerator!r}, {denominator!r}")
    return numerator // denominator


def register_resolvers() -> None:
    """Register the resolvers once (safe to call repeatedly)."""
    if not OmegaConf.has_resolver("jr_asset"):
        OmegaConf.register_new_resolver("jr_asset", asset_path)
    if not OmegaConf.has_resolver("jr_floordiv"):
        OmegaConf.register_new_resolver("jr_floordiv", floor_division)


register_resolvers()
