"""Quality sweep: evaluate JPEG and a method across qualities, then write CSV and plots.

Plots: PSNR, SSIM and LPIPS against quality; PSNR gain against quality (QGAC paper, Fig. 11);
PSNR against bits per pixel (DDRM-JPEG paper, Fig. 3). Entry point: ``scripts/sweep_qf.py``.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jpegrestore.evaluation import plots
from jpegrestore.evaluation.runner import EvaluationResult, evaluate_config

SWEEP_CSV = "sweep.csv"


def write_sweep_csv(path: Path, result: EvaluationResult) -> Path:
    """Mean of every metric per (method, quality), one line each; gains as extra ``gain_<metric>`` columns."""
    metrics = sorted({k for per_q in result.means.values() for v in per_q.values() for k in v if k != "images"},
                     key=lambda k: list(result.status).index(k) if k in result.status else 99)
    jpeg = result.means.get("jpeg", {})
    columns = ["method", "quality", "images", *metrics, *(f"gain_{m}" for m in metrics)]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for method, per_quality in result.means.items():
            for quality, values in sorted(per_quality.items()):
                row: dict[str, Any] = {"method": method, "quality": quality, **values}
                for m in metrics:
                    if m in values and m in jpeg.get(quality, {}):
                        row[f"gain_{m}"] = values[m] - jpeg[quality][m]
                writer.writerow(row)
    return path


def write_plots(result: EvaluationResult, output_dir: Path, y_convention: str = "jfif") -> dict[str, Path]:
    """The five sweep plots as PNG files in ``output_dir``; metrics that were unavailable get a note instead."""
    out = Path(output_dir)
    means = result.means
    files = {}
    for key, metric in (("psnr", "psnr"), ("ssim", "ssim"), ("lpips", "lpips_alex")):
        note = result.status.get(metric, "not requested (add it to metrics)")
        files[key] = plots.plot_metric_vs_quality(means, metric, out / f"{key}_vs_quality.png", y_convention, note)
    files["gain"] = plots.plot_gain(means, "psnr", out / "psnr_gain_vs_quality.png", y_convention)
    files["rate_distortion"] = plots.plot_rate_distortion(means, "psnr", out / "rate_distortion_psnr_bpp.png",
                                                          y_convention)
    return files


def run_sweep(cfg: Mapping[str, Any], output_dir: str | Path) -> EvaluationResult:
    """Evaluate per ``cfg`` (a composed conf/sweep_qf.yaml, with one method or a ``methods`` list) and add
    sweep.csv and the plots to ``output_dir``; with several ``datasets``, into ``output_dir/<data set>/`` each
    (file keys prefixed ``<data set>/``)."""
    result = evaluate_config(cfg, output_dir)
    out = Path(output_dir)
    by_dataset = getattr(result, "by_dataset", None) or {"": result.means}
    for dataset, means in by_dataset.items():
        folder, prefix = (out, "") if len(by_dataset) == 1 else (out / dataset, f"{dataset}/")
        folder.mkdir(parents=True, exist_ok=True)
        view = replace(result, means=means)
        result.files[f"{prefix}sweep_csv"] = write_sweep_csv(folder / SWEEP_CSV, view)
        plots_written = write_plots(view, folder, cfg.get("y_convention", "jfif"))
        result.files.update({f"{prefix}{k}": v for k, v in plots_written.items()})
    return result
