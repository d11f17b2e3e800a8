"""Several methods on several data sets in one run: every method sees the same images, the same compressed files
(one exact encoding per image and quality) and the same metric suite; a method that fails on an image is
reported as failed there and the others go on.

``python evaluate.py methods=<list>`` or ``+methods.<label>.ckpt=PATH ...`` (see :mod:`.lineup`) writes
``summary.md`` (one table per metric, rows methods, columns data set x QF), ``metrics.csv`` (one row per data
set, image, quality and method), ``metrics.json``, ``plots/<data set>/<metric>_vs_qf.png`` and
``comparisons/<data set>/<image>_q<QF>.png`` (one column per method, with a zoomed crop).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jpegrestore.evaluation import report, tables
from jpegrestore.evaluation.lineup import Dataset
from jpegrestore.evaluation.methods import JPEGDecode, RestorationMethod, method_fid_repeats
from jpegrestore.evaluation.runner import EvaluationResult, Evaluator, METHOD_REPORTED, _capped
from jpegrestore.metrics import PROTOCOL_NOTE, PSNR_CEILING_DB

Means = dict[str, dict[int, dict[str, float]]]


@dataclass
class ComparisonResult(EvaluationResult):
    """An :class:`EvaluationResult` over data sets: ``by_dataset`` is {data set: {method: {quality: {metric:
    mean}}}}, ``means`` the first data set's; rows carry a ``dataset`` key (and ``error`` where a method failed)."""

    by_dataset: dict[str, Means] = field(default_factory=dict)
    methods: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)


class ComparisonEvaluator(Evaluator):
    """The JPEG baseline and every method of ``methods`` ({label: method}) over data sets.

    Keyword arguments are :class:`Evaluator`'s (metrics, qualities, subsampling, device, ...).
    """

    def __init__(self, methods: Mapping[str, RestorationMethod], **kwargs: Any) -> None:
        super().__init__(JPEGDecode(), **kwargs)
        self.methods = dict(methods)
        self.baseline_only = not self.methods
        self.method_name = ", ".join([tables.JPEG, *self.methods])
        self.record_failures = True
        own = {label: m.compression.description for label, m in self.methods.items()
               if getattr(m, "compression", None) is not None}
        if own:  # every method here restores the same exact libjpeg files
            raise ValueError(f"methods {own} compress with their own JPEG operator; a comparison gives every method "
                             "the same libjpeg files: evaluate them in a run of their own")
        self.fid = self._fid_suites()

    def run_all(self, datasets: Sequence[Dataset], output_dir: str | Path,
                header: Sequence[str] = ()) -> ComparisonResult:
        """Evaluate every data set and write the report into ``output_dir``."""
        from tqdm.auto import tqdm

        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        total = sum(d.count for d in datasets) * len(self.qualities) * (1 + len(self.methods))
        self.bar = tqdm(total=total, unit="img", disable=not self.progress,
                        desc=f"{1 + len(self.methods)} methods x {sum(d.count for d in datasets)} images x "
                             f"{len(self.qualities)} qualities")
        rows: list[dict[str, Any]] = []
        set_metrics: dict[str, dict[str, dict[int, Any]]] = {}
        skipped: list[str] = []
        try:
            for dataset in datasets:
                found, fid, missed = self.collect(dataset.source, out / "comparisons" / dataset.name,
                                                  dataset.max_images, dataset.preprocess)
                if not found:
                    raise ValueError(f"data set {dataset.name}: no usable images ({len(missed)} skipped)")
                rows.extend({"dataset": dataset.name, **row} for row in found)
                set_metrics[dataset.name] = fid
                skipped.extend(f"{dataset.name}: {s}" for s in missed)
        finally:
            self.bar.close()
            self.bar = None
        return self._report_all(out, datasets, rows, set_metrics, skipped, header)

    def _report_all(self, out: Path, datasets: Sequence[Dataset], rows: list[dict[str, Any]],
                    set_metrics: dict[str, dict[str, dict[int, Any]]], skipped: list[str],
                    header: Sequence[str]) -> ComparisonResult:
        metrics = [n for n in self.metric_names if n != "fid" and self.status.get(n) == "ok"]
        metrics += [n for n in METHOD_REPORTED if n in self.reported]
        by_dataset: dict[str, Means] = {}
        for dataset in datasets:
            means = tables.means([r for r in rows if r["dataset"] == dataset.name], [*metrics, "seconds"])
            means = {label: means[label] for label in [tables.JPEG, *self.methods] if label in means}
            for side, per_quality in set_metrics.get(dataset.name, {}).items():
                for quality, values in per_quality.items():
                    for name in ("fid", "fid_std"):
                        if isinstance(values.get(name), float) and side in means:
                            means[side].setdefault(quality, {})[name] = values[name]
            by_dataset[dataset.name] = means
        status = dict(self.status)
        fids = [values.get("fid") for per_set in set_metrics.values() for per_q in per_set.values()
                for values in per_q.values()]
        if status.get("fid") == "ok" and not any(isinstance(v, float) for v in fids):
            status["fid"] = next((str(v) for v in fids), "no images")
        shown = [n for n in self.metric_names if status.get(n) == "ok"]
        if "fid" in shown and any(method_fid_repeats(m) > 1 for m in self.methods.values()):
            shown.insert(shown.index("fid") + 1, "fid_std")  # FID over K repeats: mean and std
            status.setdefault("fid_std", status["fid"])
        shown += [n for n in METHOD_REPORTED if n in self.reported]
        labels = [tables.JPEG, *self.methods]
        header = [
            *header, *(f"data set {d.describe()}" for d in datasets),
            f"qualities: {self.qualities}; compression: jpeg.encode/decode, rounding=exact (identical to "
            f"libjpeg-turbo), {self.subsampling}; every method restores the same files",
            PROTOCOL_NOTE,
            *([f"rows at the PSNR ceiling of {PSNR_CEILING_DB:g} dB: {capped}"] if (capped := _capped(rows)) else []),
            *([f"skipped images: {len(skipped)}"] if skipped else []),
        ]
        files = {"csv": out / "metrics.csv", "json": out / "metrics.json", "summary": out / "summary.md"}
        tables.write_csv(files["csv"], rows, metrics, self.y_convention, leading=["dataset"], trailing=["error"])
        info = {"methods": labels, "datasets": [d.name for d in datasets], "qualities": self.qualities,
                "subsampling": self.subsampling, "y_convention": self.y_convention, "metric_status": status,
                "header": header, "skipped": skipped}
        tables.write_json(files["json"], info, rows, by_dataset)
        files["summary"].write_text(report.comparison_markdown(by_dataset, labels, shown, status, self.y_convention,
                                                               rows, header))
        files.update(report.write_quality_plots(by_dataset, shown, out / "plots", self.y_convention, status))
        first = next(iter(by_dataset.values()), {})
        return ComparisonResult(rows, first, status, self.method_name, files, skipped, by_dataset=by_dataset,
                                methods=labels, metrics=shown)


def evaluate_comparison(cfg: Mapping[str, Any], output_dir: str | Path) -> ComparisonResult:
    """The run of a composed ``conf/evaluate.yaml`` with ``methods`` and/or ``datasets``: every method is built
    (and every data set opened) before the first image, so a file that cannot be loaded stops the run at once."""
    from jpegrestore.evaluation.lineup import build_datasets, build_methods
    from jpegrestore.evaluation.methods import build_method
    from jpegrestore.utils.instantiate import to_plain

    def get(key: str, default: Any = None) -> Any:
        value = cfg.get(key, default)
        return default if value is None and default is not None else to_plain(value)

    datasets = build_datasets(cfg.get("datasets"), cfg.get("data"), get("max_images"))
    if cfg.get("methods"):
        if get("ckpt"):
            raise ValueError("ckpt= evaluates one checkpoint; with methods=..., list it as an entry instead "
                             "(+methods.<label>.ckpt=PATH)")
        methods = build_methods(cfg.get("methods"), cfg)
    else:
        single = build_method(cfg.get("method"), get("ckpt"), get("device", "auto"), get("tile"),
                              int(get("tile_overlap", 32)), get("outside_range"), pretrained=get("pretrained"))
        methods = {} if isinstance(single, JPEGDecode) else {single.name: single}
    evaluator = ComparisonEvaluator(
        methods, metrics=get("metrics"), qualities=get("qf"), subsampling=get("subsampling", "4:2:0"),
        device=get("device", "auto"), y_convention=get("y_convention", "jfif"), crop_border=int(get("crop_border", 0)),
        weight_paths=get("weights") or None, batch_size=int(get("batch_size", 1)),
        comparisons=int(get("comparisons", 2)), progress=bool(get("progress", True)),
    )
    header = [f"method {label}: {describe_method(m)}" for label, m in methods.items()]
    return evaluator.run_all(datasets, output_dir, header)


def describe_method(method: Any) -> str:
    """One line about a method for the summary header: its class and the files it was loaded from."""
    inner = getattr(method, "method", method)
    parts = [type(inner).__name__]
    for key in ("ckpt", "prior_source", "weights"):
        value = getattr(inner, key, None)
        if isinstance(value, (str, Path)) and value:
            parts.append(f"{key.replace('_source', '')}={value}")
    return ", ".join(parts)
