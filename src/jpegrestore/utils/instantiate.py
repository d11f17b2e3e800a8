"""Turning config mappings (``{"_target_": "pkg.Class", **kwargs}``) into objects, without Hydra magic.

Tasks keep their sub-configs as plain dicts so the exact constructor arguments can be stored in checkpoints
and replayed by :func:`jpegrestore.checkpoints.load_network`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


def to_plain(value: Any) -> Any:
    """OmegaConf containers -> dicts/lists (resolved); tuples -> lists; other values unchanged, recursively."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def import_object(path: str) -> Any:
    """``"package.module.Name"`` -> the object. ValueError naming the path when it cannot be imported."""
    module_name, _, attribute = path.rpartition(".")
    if not module_name:
        raise ValueError(f"_target_ {path!r} is not a dotted path like 'package.module.Name'")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        # The path may name a nested attribute (Class.method): import the parent and walk down.
        parent = import_object(module_name)
        if not hasattr(parent, attribute):
            raise ValueError(f"cannot import _target_ {path!r}: {module_name!r} has no attribute {attribute!r}")
        return getattr(parent, attribute)
    if not hasattr(module, attribute):
        raise ValueError(f"cannot import _target_ {path!r}: module {module_name!r} has no attribute {attribute!r}")
    return getattr(module, attribute)


def instantiate_object(config: Mapping[str, Any] | DictConfig, *args: Any, **extra: Any) -> Any:
    """Call ``config["_target_"]`` with the other keys (plus ``extra``) as keyword arguments.

    Nested mappings are passed as plain dicts, not instantiated. ValueError if ``_target_`` is missing.
    """
    config = to_plain(config)
    if not isinstance(config, Mapping) or "_target_" not in config:
        raise ValueError(f"config needs a '_target_' key naming the class to build, got {config!r}")
    kwargs = {k: v for k, v in config.items() if not k.startswith("_")}
    kwargs.update(extra)
    return import_object(config["_target_"])(*args, **kwargs)


def _instantiate_group(group: Any, kind: str) -> list[Any]:
    """Instantiate every ``_target_`` entry of a config group (mapping of name -> config, or None)."""
    from hydra.utils import instantiate

    if group is None:
        return []
    if not isinstance(group, (Mapping, DictConfig)):
        raise ValueError(f"{kind} config must be a mapping of name -> {{_target_: ...}}, got {type(group).__name__}")
    built = []
    for name, entry in group.items():
        if entry is None:
            continue  # disabled from the command line with e.g. `callbacks.lr_monitor=null`
        if not isinstance(entry, (Mapping, DictConfig)) or "_target_" not in entry:
            raise ValueError(f"{kind} entry {name!r} needs a '_target_' key, got {entry!r}")
        built.append(instantiate(entry))
    return built


def instantiate_callbacks(config: Any) -> list[Any]:
    """Lightning callbacks from the ``callbacks`` config group (name -> {_target_: ...})."""
    return _instantiate_group(config, "callbacks")


def instantiate_loggers(config: Any) -> list[Any]:
    """Lightning loggers from the ``logger`` config group (name -> {_target_: ...})."""
    return _instantiate_group(config, "logger")
