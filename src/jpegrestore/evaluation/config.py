"""``evaluate.py``'s body: the evaluation a composed ``conf/evaluate.yaml`` describes, one method
(:class:`jpegrestore.evaluation.runner.Evaluator`) or several on several data sets
(:mod:`jpegrestore.evaluation.compare`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jpegrestore.evaluation.methods import build_method
from jpegrestore.evaluation.runner import DEFAULT_METRICS, DEFAULT_QUALITIES, EvaluationResult, Evaluator, eval_source
from jpegrestore.utils.instantiate import to_plain


def evaluate_config(cfg: Mapping[str, Any], output_dir: str | Path) -> EvaluationResult:
    """Run the evaluation described by a composed ``conf/evaluate.yaml`` and write it to ``output_dir``.

    Only the keys used here are resolved, so a config composed outside a Hydra run works too. With ``methods``
    or ``datasets`` set, the run compares every listed method on every data set
    (:func:`jpegrestore.evaluation.compare.evaluate_comparison`).
    """
    if cfg.get("methods") or cfg.get("datasets"):
        from jpegrestore.evaluation.compare import evaluate_comparison

        return evaluate_comparison(cfg, output_dir)

    def get(key: str, default: Any = None) -> Any:
        value = cfg.get(key, default)
        return default if value is None and default is not None else to_plain(value)

    ckpt = get("ckpt")
    if ckpt:  # read once: the method, its network and the header all take this object
        from jpegrestore.checkpoints import Checkpoint

        ckpt = Checkpoint.read(ckpt)
    method = build_method(cfg.get("method"), ckpt, get("device", "auto"), get("tile"), int(get("tile_overlap", 32)),
                          get("outside_range"), pretrained=get("pretrained"))
    source = eval_source(cfg.get("data"))
    evaluator = Evaluator(
        method, metrics=get("metrics", list(DEFAULT_METRICS)), qualities=get("qf", list(DEFAULT_QUALITIES)),
        subsampling=get("subsampling", "4:2:0"), device=get("device", "auto"),
        y_convention=get("y_convention", "jfif"), crop_border=int(get("crop_border", 0)),
        weight_paths=get("weights") or None, batch_size=int(get("batch_size", 1)),
        comparisons=int(get("comparisons", 2)), progress=bool(get("progress", True)),
    )
    header = [f"data: {getattr(source, 'where', source)} ({len(source)} images)"]
    if ckpt:
        from jpegrestore.checkpoints import checkpoint_description

        header[:0] = [f"checkpoint: {ckpt}", *checkpoint_description(ckpt)]  # the path, then what it records
    domain = getattr(method, "domain", None)
    if domain is not None:
        from jpegrestore.evaluation.domain import qualities_outside

        outside = qualities_outside(domain, evaluator.qualities)
        note = f"; outside it: QF {outside} (outside_range={method.policy})" if outside else ""
        header.append(f"trained on: {domain.describe()}{note}")
    return evaluator.run(source, output_dir, get("max_images"), header)
