"""Evaluation results: per-image rows -> metrics.csv, metrics.json and a Markdown summary.

A row is ``{"image": str, "quality": int, "method": str, <metric>: float, ...}``; the JPEG baseline rows
have ``method == "jpeg"``. Means are taken per (method, quality) over images.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jpegrestore.metrics import METRICS, metric_label, y_convention_name

JPEG = "jpeg"


def means(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> dict[str, dict[int, dict[str, float]]]:
    """{method: {quality: {metric: mean over images}}} for the metrics present in the rows."""
    groups: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["method"], int(row["quality"])), []).append(row)
    out: dict[str, dict[int, dict[str, float]]] = {}
    for (method, quality), members in sorted(groups.items(), key=lambda kv: (kv[0][0] != JPEG, kv[0])):
        values = {}
        for name in metrics:
            present = [float(r[name]) for r in members if r.get(name) is not None]
            if present:
                values[name] = sum(present) / len(present)
        values["images"] = len(members)
        out.setdefault(method, {})[quality] = values
    return out


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], y_convention: str,
              leading: Sequence[str] = (), trailing: Sequence[str] = ()) -> None:
    """One line per (image, quality, method); metric columns by key, plus the Y convention of the ``*_y`` ones.
    ``leading`` columns (e.g. "dataset") come first, ``trailing`` ones (e.g. "error") before the convention."""
    columns = [*leading, "image", "quality", "method", *metrics, "seconds", *trailing, "y_convention"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "y_convention": y_convention_name(y_convention)})


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json(path: Path, info: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any]) -> None:
    """Run description, per-(method, quality) means and every per-image row (non-finite values as null)."""
    payload = {**info, "means": summary, "per_image": list(rows)}
    path.write_text(json.dumps(_finite(payload), indent=2) + "\n")


def _format(value: float | None, name: str, sign: bool = False) -> str:
    if value is None:
        return "n/a"
    digits = 4 if name.startswith(("ssim", "lpips")) or name in ("dists", "bpp") else 2
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _label(name: str, y_convention: str) -> str:
    arrow = "↑" if METRICS[name].higher_is_better else "↓"
    return f"{metric_label(name, y_convention)} {arrow}"


def summary_markdown(
    summary: Mapping[str, Mapping[int, Mapping[str, float]]],
    metrics: Sequence[str],
    status: Mapping[str, str],
    y_convention: str,
    method: str,
    header: Sequence[str] = (),
) -> str:
    """Tables of mean metric per quality: plain JPEG and the method side by side, and the gain (method - JPEG)."""
    lines = ["# Evaluation summary", ""]
    lines += [f"- {h}" for h in header]
    lines.append(f"- Y channel of the `_y` metrics: {y_convention_name(y_convention)}; others on RGB")
    lines.append("- Gain = method - JPEG (↑: higher is better, ↓: lower is better)")
    for name in metrics:
        if status.get(name, "ok") != "ok":
            lines.append(f"- {metric_label(name, y_convention)}: {status[name]}")
    lines.append("")
    available = [m for m in metrics if status.get(m, "ok") == "ok"]
    jpeg_means = summary.get(JPEG, {})
    compare = method != JPEG and method in summary
    for quality in sorted(jpeg_means):
        count = jpeg_means[quality].get("images", 0)
        lines += [f"## Quality {quality} ({count} images)", ""]
        if compare:
            lines += [f"| Metric | JPEG | {method} | Gain |", "|---|---:|---:|---:|"]
        else:
            lines += ["| Metric | JPEG |", "|---|---:|"]
        for name in available:
            base = jpeg_means[quality].get(name)
            cells = [_label(name, y_convention), _format(base, name)]
            if compare:
                value = summary[method].get(quality, {}).get(name)
                gain = None if value is None or base is None else value - base
                cells += [_format(value, name), _format(gain, name, sign=True)]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)
