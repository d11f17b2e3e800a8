"""Turn a source spec (a name, a folder, a Hydra config or a built source) into a source object.

It sits above ``sources.py`` and ``shards.py``, which know nothing of each other's spec forms.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from .shards import ShardedSource
from .sources import FolderSource, ImageSource, SampleSource


def resolve_source(spec: Any, stage: str) -> Optional[ImageSource]:
    """Turn a source spec into an ImageSource.

    ``spec`` may be None, an ImageSource, a Hydra config with ``_target_``, the string "sample" (the
    sample split named by ``stage``: "train", "val" or "test"), "sample:<split>", or a folder path. Training
    may also stream from a :class:`jpegrestore.data.shards.ShardedSource`.
    """
    if spec is None or isinstance(spec, (ImageSource, ShardedSource)):
        return spec
    if isinstance(spec, (str, os.PathLike)):
        text = str(spec)
        if text == "sample":
            return SampleSource(split=stage)
        if text.startswith("sample:"):
            return SampleSource(split=text.split(":", 1)[1])
        return FolderSource(text)
    try:
        from omegaconf import DictConfig
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        DictConfig = dict
    if isinstance(spec, (dict, DictConfig)):
        if "_target_" not in spec:
            raise ValueError(f"{stage} source config needs a _target_ key, got keys {list(spec)}")
        from hydra.utils import instantiate

        built = instantiate(spec)
        if isinstance(built, ShardedSource) and stage == "train":
            return built
        if not isinstance(built, ImageSource):
            raise ValueError(f"{stage} source _target_ {spec['_target_']!r} did not build an ImageSource")
        return built
    raise ValueError(f"cannot make an image source for {stage} from a {type(spec).__name__}: {spec!r}")
