"""One evaluation for every method: runner, restoration methods, coefficient-domain tiling, tables, plots, grids.

>>> from jpegrestore.evaluation import Evaluator, CheckpointMethod, eval_source
>>> Evaluator(CheckpointMethod("last.ckpt"), qualities=[10, 20]).run(eval_source("sample"), "out/")
"""

from jpegrestore.evaluation.methods import (
    CheckpointMethod, JPEGDecode, NetworkMethod, RestorationMethod, build_method, resolve_device,
)
from jpegrestore.evaluation.config import evaluate_config
from jpegrestore.evaluation.runner import DEFAULT_METRICS, DEFAULT_QUALITIES, EvaluationResult, Evaluator, eval_source
from jpegrestore.tiling import restore_tiled

__all__ = [
    "CheckpointMethod", "JPEGDecode", "NetworkMethod", "RestorationMethod", "build_method", "resolve_device",
    "DEFAULT_METRICS", "DEFAULT_QUALITIES", "EvaluationResult", "Evaluator", "eval_source", "evaluate_config",
    "restore_tiled",
]
