"""OmegaConf resolvers used by the configs (registered when ``jpegrestore.utils`` is imported).

``${jr_asset:name}``: absolute path of a file shipped in ``jpegrestore/assets/`` (FileNotFoundError if absent).
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


def register_resolvers() -> None:
    """Register the resolvers once (safe to call repeatedly)."""
    if not OmegaConf.has_resolver("jr_asset"):
        OmegaConf.register_new_resolver("jr_asset", asset_path)


register_resolvers()
