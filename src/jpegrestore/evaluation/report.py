"""The comparison report as papers print it: one table per metric (rows methods, columns data set x QF) grouped
by kind, the best value of each column in bold and the second underlined, arrows for the better direction; and
each metric against QF with one line per method.

``by_dataset`` is {data set: {method: {quality: {metric: mean}}}} as from :func:`tables.means` per data set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jpegrestore.evaluation import plots, tables
from jpegrestore.metrics import METRICS, metric_label, y_convention_name

ByDataset = Mapping[str, Mapping[str, Mapping[int, Mapping[str, float]]]]

#: Table groups of the summary, in order; a metric not listed goes to the last group.
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Fidelity", ("psnr", "ssim", "psnrb", "psnr_y", "ssim_y", "psnrb_y")),
    ("Perceptual (full reference)", ("lpips_alex", "lpips_vgg", "dists")),
    ("No reference", ("musiq", "maniqa", "clipiqa")),
    ("Distribution", ("fid",)),
    ("JPEG consistency and rate", ("consistency", "bpp")),
    ("Cost and diversity", ("seconds", "nfe", "sample_std")),
)
#: Columns whose ranking means nothing (the same file for every method, or a spread that is neither good nor bad).
UNRANKED = ("bpp", "sample_std")
SECONDS = "seconds"


def _title(name: str, y_convention: str) -> str:
    if name == SECONDS:
        return "Seconds per image ↓"
    arrow = "↑" if METRICS[name].higher_is_better else "↓"
    return f"{metric_label(name, y_convention)} {arrow}"


def _higher_is_better(name: str) -> bool:
    return False if name == SECONDS else METRICS[name].higher_is_better


def _format(value: float | None, name: str) -> str | None:
    if value is None:
        return None
    if name == SECONDS:
        return f"{value:.3g}"
    if name == "nfe":
        return f"{value:g}"
    digits = 4 if name.startswith(("ssim", "lpips", "dists")) or name in ("bpp", "maniqa", "clipiqa") else 2
    return f"{value:.{digits}f}"


def ranked_cells(values: Sequence[float | None], name: str, missing: Sequence[str] | None = None) -> list[str]:
    """Formatted cells of one column: the best value (as printed) in bold, the second underlined; for None the
    matching entry of ``missing`` (default "n/a").

    Ties (equal printed values) share the mark; with fewer than two distinct values nothing is marked.
    """
    text = [_format(v, name) for v in values]
    missing = ["n/a"] * len(text) if missing is None else missing
    cells = [m if t is None else t for t, m in zip(text, missing)]
    if name in UNRANKED:
        return cells
    distinct = sorted({float(t) for t in text if t is not None}, reverse=_higher_is_better(name))
    if len(distinct) < 2:
        return cells
    for i, t in enumerate(text):
        if t is not None and float(t) == distinct[0]:
            cells[i] = f"**{t}**"
        elif t is not None and float(t) == distinct[1]:
            cells[i] = f"<u>{t}</u>"
    return cells


def metric_table(by_dataset: ByDataset, methods: Sequence[str], name: str, y_convention: str,
                 failed: set[tuple[str, str, int]] = frozenset()) -> list[str]:
    """Markdown lines of one metric's table: rows methods (JPEG as "JPEG"), columns data set x QF; a method that
    failed on every image of a column reads "failed" there (``failed`` holds such (method, data set, QF))."""
    columns = [(d, q) for d, per_method in by_dataset.items()
               for q in sorted({q for per_q in per_method.values() for q in per_q})]
    lines = [f"### {_title(name, y_convention)}", "",
             "| Method | " + " | ".join(f"{d} QF{q}" for d, q in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    grid = [[by_dataset[d].get(m, {}).get(q, {}).get(name) for d, q in columns] for m in methods]
    ranked = [ranked_cells([row[j] for row in grid], name,
                           ["failed" if (m, *columns[j]) in failed else "n/a" for m in methods])
              for j in range(len(columns))]
    for i, method in enumerate(methods):
        label = "JPEG" if method == tables.JPEG else method
        lines.append(f"| {label} | " + " | ".join(col[i] for col in ranked) + " |")
    return lines + [""]


def _failures(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    failed: dict[tuple[str, str, int], list[Mapping[str, Any]]] = {}
    for row in rows:
        if row.get("error"):
            failed.setdefault((row["method"], row.get("dataset", ""), int(row["quality"])), []).append(row)
    lines = []
    for (method, dataset, quality), members in failed.items():
        lines.append(f"- {method} failed on {len(members)} image(s) of {dataset} at QF {quality} (left out of its "
                     f"means), e.g. {members[0]['image']}: {members[0]['error']}")
    return lines


def comparison_markdown(by_dataset: ByDataset, methods: Sequence[str], metrics: Sequence[str],
                        status: Mapping[str, str], y_convention: str, rows: Sequence[Mapping[str, Any]] = (),
                        header: Sequence[str] = ()) -> str:
    """summary.md of a comparison: header, failures, unavailable metrics, then one table per metric by group."""
    lines = ["# Evaluation summary", ""]
    lines += [f"- {h}" for h in header]
    lines.append(f"- Y channel of the `_y` metrics: {y_convention_name(y_convention)}; others on RGB")
    lines.append("- ↑ higher is better, ↓ lower is better; per column the best value is **bold**, the second "
                 "<u>underlined</u>; failed images are left out of a method's means")
    lines += [f"- {metric_label(n, y_convention)}: {status[n]}" for n in status if status[n] != "ok"]
    failures = _failures(rows)
    lines += ["", "## Failures", "", *failures] if failures else []
    lines.append("")
    available = [n for n in metrics if status.get(n, "ok") == "ok"]
    present = {k for per_m in by_dataset.values() for per_q in per_m.values() for v in per_q.values() for k in v}
    ordered = [*available, *([SECONDS] if SECONDS in present else [])]
    tried: dict[tuple[str, str, int], bool] = {}
    for row in rows:
        key = (row["method"], row.get("dataset", ""), int(row["quality"]))
        tried[key] = tried.get(key, True) and bool(row.get("error"))
    failed = {key for key, all_failed in tried.items() if all_failed}
    for title, members in GROUPS:
        group = [n for n in ordered if n in members or (title == GROUPS[-1][0] and
                                                         not any(n in g for _, g in GROUPS))]
        if group:
            lines += [f"## {title}", ""]
            for name in group:
                lines += metric_table(by_dataset, methods, name, y_convention, failed)
    return "\n".join(lines)


def write_quality_plots(by_dataset: ByDataset, metrics: Sequence[str], folder: Path, y_convention: str,
                        status: Mapping[str, str]) -> dict[str, Path]:
    """``folder/<data set>/<metric>_vs_qf.png`` for every available metric: mean against QF, one line per method.
    Returns {"plot_<data set>_<metric>": path}."""
    files = {}
    for dataset, means in by_dataset.items():
        target = folder / dataset
        target.mkdir(parents=True, exist_ok=True)
        for name in metrics:
            if status.get(name, "ok") != "ok" or name in ("bpp", "nfe"):  # the same files / a fixed count
                continue
            path = target / f"{name}_vs_qf.png"
            files[f"plot_{dataset}_{name}"] = plots.plot_metric_vs_quality(means, name, path, y_convention)
    return files
