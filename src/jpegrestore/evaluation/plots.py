"""Quality-sweep plots (matplotlib, Agg canvas; no display needed).

``means`` is ``{method: {quality: {metric: value}}}`` as from :func:`jpegrestore.evaluation.tables.means`;
the JPEG baseline is the method "jpeg".
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jpegrestore.evaluation.tables import JPEG
from jpegrestore.metrics import metric_label

Means = Mapping[str, Mapping[int, Mapping[str, float]]]
SIZE = (6.4, 4.4)
DPI = 100


def _figure(title: str) -> tuple[Figure, object]:
    figure = Figure(figsize=SIZE, dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    return figure, axes


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, format="png")
    return path


def _series(means: Means, method: str, x_key: str | None, y_key: str) -> tuple[list[float], list[float]]:
    """(x, y) points of one method: x is the quality (x_key None) or another metric's mean."""
    points = []
    for quality, values in sorted(means.get(method, {}).items()):
        x = quality if x_key is None else values.get(x_key)
        if x is not None and values.get(y_key) is not None:
            points.append((float(x), float(values[y_key])))
    return [p[0] for p in points], [p[1] for p in points]


def _placeholder(axes, text: str) -> None:
    axes.text(0.5, 0.5, text, ha="center", va="center", wrap=True, transform=axes.transAxes)


def _plot_lines(means: Means, x_metric: str | None, metric: str, path: Path, y_convention: str, title: str,
                xlabel: str, placeholder: str) -> Path:
    """Mean ``metric`` against quality (``x_metric`` None) or another metric, one line per method (JPEG first)."""
    label = metric_label(metric, y_convention)
    figure, axes = _figure(title.format(label=label))
    drawn = False
    for method in means:
        x, y = _series(means, method, x_metric, metric)
        if x:
            axes.plot(x, y, marker="o", markersize=3, label="JPEG" if method == JPEG else method)
            drawn = True
    if drawn:
        axes.legend()
    else:
        _placeholder(axes, placeholder)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(label)
    return _save(figure, path)


def plot_metric_vs_quality(means: Means, metric: str, path: Path, y_convention: str = "jfif",
                           note: str | None = None) -> Path:
    """Mean ``metric`` against JPEG quality, one line per method (JPEG first)."""
    placeholder = f"{metric_label(metric, y_convention)}: {note or 'no data'}"
    return _plot_lines(means, None, metric, path, y_convention, "{label} vs JPEG quality", "JPEG quality",
                       placeholder)


def plot_gain(means: Means, metric: str, path: Path, y_convention: str = "jfif") -> Path:
    """Gain (method - JPEG) in ``metric`` against quality, one line per restoration method."""
    label = metric_label(metric, y_convention)
    figure, axes = _figure(f"Gain in {label} over JPEG")
    jpeg_by_quality = dict(zip(*_series(means, JPEG, None, metric)))
    drawn = False
    for method in means:
        if method == JPEG:
            continue
        x, y = _series(means, method, None, metric)
        points = [(q, v - jpeg_by_quality[q]) for q, v in zip(x, y) if q in jpeg_by_quality]
        if points:
            axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3, label=method)
            drawn = True
    axes.axhline(0.0, color="gray", linewidth=0.8)
    if drawn:
        axes.legend()
    else:
        _placeholder(axes, "plain JPEG only: no restoration method to compare (pass ckpt=...)")
    axes.set_xlabel("JPEG quality")
    axes.set_ylabel(f"Δ {label}")
    return _save(figure, path)


def plot_rate_distortion(means: Means, metric: str, path: Path, y_convention: str = "jfif") -> Path:
    """Mean ``metric`` against the JPEG's bits per pixel (the method restores the same files)."""
    return _plot_lines(means, "bpp", metric, path, y_convention, "Rate-distortion: {label} vs bits per pixel",
                       "bits per pixel (JPEG file)", "needs the bpp metric")
