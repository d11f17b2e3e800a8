"""The gradio page of ``jpegrestore demo`` (layout and event wiring only; the restore logic is ``demo.compare``).

Every component a test reads has an ``elem_id``: ``upload``, ``reference``, ``quality``, ``layout``, ``methods``,
``draws``, ``seed``, ``project``, ``run``, ``status``, ``view-jpeg`` and ``view-<i>`` (side by side), ``metrics``
(an HTML table, ``data-value`` holding full-precision numbers), ``zoom-x``/``zoom-y``/``zoom-size`` and
``zoom-jpeg``/``zoom-<i>``, ``slider-method`` and ``slider``, ``std-<i>`` (stochastic methods), ``downloads``;
``<i>`` is the method's index on the command line.
"""

from __future__ import annotations

import html
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from jpegrestore.demo.compare import LAYOUTS, METRIC_NAMES, MethodBank, MethodResult, PreparedInput, compare, \
    prepare_input, zoom

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no version check or telemetry: the page is local

import gradio as gr  # noqa: E402

log = logging.getLogger(__name__)

#: Largest number of draws the page offers for stochastic methods.
MAX_DRAWS = 32
#: Request folders kept on disk (the zoom and slider of a page read its files); older ones are deleted.
KEPT_REQUESTS = 16
INTRO = ("Upload a **JPEG** (restored with its own quantization tables, as `jpegrestore restore` does) or a "
         "**clean image** (PNG, ...: compressed here at the quality and chroma layout below with the exact "
         "libjpeg-turbo operator, and used as the reference of the metrics). Every output is the PNG "
         "`jpegrestore restore` writes for the same file and options.")

#: Small images fill their boxes, magnified without smoothing (so blocks and ringing stay visible).
CSS = ("[id^=view-] img, [id^=std-] img { width: 100%; height: 100%; object-fit: contain; "
       "image-rendering: pixelated; }")


def metrics_table(results: list[MethodResult]) -> str:
    """HTML table: one row per column of the page (JPEG first) with draws, seconds, the metrics of the first draw
    and the mean per-pixel std; cells carry ``data-metric`` and ``data-value`` (full precision)."""
    from jpegrestore.metrics import metric_label

    with_metrics = any(r.metrics for r in results)
    names = list(METRIC_NAMES) if with_metrics else []
    head = ["method", "draws", "seconds"] + [metric_label(n) for n in names] + ["mean std (0..1)"]
    rows = []
    for result in results:
        if result.error:
            rows.append(f'<tr data-label="{html.escape(result.label)}"><td data-metric="method">'
                        f'{html.escape(result.label)}</td><td colspan="{len(head) - 1}" data-metric="error">failed: '
                        f'{html.escape(result.error)}</td></tr>')
            continue
        cells = [f'<td data-metric="method">{html.escape(result.label)}</td>',
                 f'<td data-metric="draws" data-value="{len(result.images)}">{len(result.images)}</td>',
                 f'<td data-metric="seconds" data-value="{result.seconds!r}">{result.seconds:.2f}</td>']
        for name in names:
            value = result.metrics.get(name)
            shown = "" if value is None else (f"{value:.4f}" if name.startswith("ssim") else f"{value:.2f}")
            cells.append(f'<td data-metric="{name}" data-value="{value!r}">{shown}</td>')
        spread = "" if result.mean_std is None else f"{result.mean_std:.4f}"
        cells.append(f'<td data-metric="mean_std" data-value="{result.mean_std!r}">{spread}</td>')
        rows.append(f'<tr data-label="{html.escape(result.label)}">{"".join(cells)}</tr>')
    header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    note = ("Metrics of the first draw against the clean image, on the 8-bit PNG (as evaluate.py); seconds: "
            "restoration and PNG writing." if with_metrics else "No clean image: no metrics.")
    return (f'<table id="metrics-table"><thead><tr>{header}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
            f"<p>{html.escape(note)}</p>")


def _status(prepared: PreparedInput, results: list[MethodResult]) -> str:
    lines = [f"**{prepared.describe()}**"]
    for result in results[1:]:
        if result.error:
            lines.append(f"- **error ({result.label}):** {html.escape(result.error)}")
        for message in dict.fromkeys(result.messages):
            lines.append(f"- warning ({result.label}): {message}")
    return "\n".join(lines)


def _image(label: str, elem_id: str, kind: str = "filepath", height: int = 260) -> gr.Image:
    """An output image (no upload, no sharing)."""
    return gr.Image(label=label, type=kind, format="png", interactive=False, height=height,
                    buttons=["download", "fullscreen"], elem_id=elem_id)


def new_request_folder(workroot: Path, keep: int = KEPT_REQUESTS) -> Path:
    """A new folder for one request's files; the oldest beyond the ``keep`` newest are deleted."""
    folder = Path(tempfile.mkdtemp(prefix="request-", dir=workroot))
    older = sorted((p for p in workroot.glob("request-*") if p != folder), key=lambda p: p.stat().st_mtime)
    for stale in older[:max(0, len(older) - keep + 1)]:
        shutil.rmtree(stale, ignore_errors=True)
    return folder


def build_page(bank: MethodBank, workroot: Path) -> gr.Blocks:
    """The page for the methods of ``bank``; each request writes its files in a new folder under ``workroot``."""
    labels = bank.labels
    stochastic = [i for i, label in enumerate(labels) if bank.stochastic[label]]
    with gr.Blocks(title="jpegrestore demo", analytics_enabled=False, delete_cache=(3600, 7200)) as page:
        gr.Markdown("# jpegrestore demo\n" + INTRO)
        with gr.Row():
            with gr.Column(scale=1, min_width=280):
                upload = gr.File(label="Image: a JPEG, or a clean image", type="filepath", elem_id="upload")
                reference = gr.File(label="Clean image of an uploaded JPEG (optional, for metrics)",
                                    type="filepath", elem_id="reference")
                quality = gr.Slider(1, 100, value=30, step=1, label="Quality of a clean image", elem_id="quality")
                layout = gr.Radio(list(LAYOUTS), value="4:2:0", label="Chroma layout of a clean image",
                                  elem_id="layout")
                chosen = gr.CheckboxGroup(labels, value=labels, label="Methods", elem_id="methods")
                with gr.Group(visible=bool(stochastic)):
                    draws = gr.Slider(1, MAX_DRAWS, value=4, step=1, label="Draws (stochastic methods)",
                                      elem_id="draws")
                    seed = gr.Number(0, precision=0, label="Seed (stochastic methods)", elem_id="seed")
                project = gr.Checkbox(False, label="Project every output onto the JPEG's quantization bins "
                                                   "(--project)", elem_id="project")
                run = gr.Button("Restore", variant="primary", elem_id="run")
            with gr.Column(scale=3):
                status = gr.Markdown("Upload an image, then press Restore.", elem_id="status")
                with gr.Row():
                    views = [_image("JPEG", "view-jpeg")]
                    views += [_image(label, f"view-{i}") for i, label in enumerate(labels)]
                metrics = gr.HTML(elem_id="metrics")
                gr.Markdown("**Zoom** (the same region of every image)")
                with gr.Row():
                    zoom_x = gr.Slider(0, 4096, value=0, step=1, label="x", elem_id="zoom-x")
                    zoom_y = gr.Slider(0, 4096, value=0, step=1, label="y", elem_id="zoom-y")
                    zoom_size = gr.Slider(8, 512, value=64, step=8, label="size", elem_id="zoom-size")
                with gr.Row():
                    zooms = [_image("JPEG (zoom)", "zoom-jpeg", "numpy")]
                    zooms += [_image(f"{label} (zoom)", f"zoom-{i}", "numpy") for i, label in enumerate(labels)]
                slider_method = gr.Dropdown(labels, value=labels[0], label="Before / after against the JPEG",
                                            elem_id="slider-method")
                slider = gr.ImageSlider(label="JPEG | restored", type="filepath", format="png", height=420,
                                        buttons=["fullscreen"], elem_id="slider")
                with gr.Row():
                    stds = {i: _image(f"{labels[i]}: per-pixel std over the draws (white: the largest)", f"std-{i}")
                            for i in stochastic}
                downloads = gr.File(label="Results as PNG", file_count="multiple", interactive=False,
                                    elem_id="downloads")
        state = gr.State({})

        def crops(shown: dict[str, Any], x: float, y: float, size: float) -> list[Any]:
            paths = [shown.get("JPEG")] + [shown.get(label) for label in labels]
            return [zoom(p, int(x), int(y), int(size)) if p and Path(p).exists() else None for p in paths]

        def before_after(shown: dict[str, Any], label: str) -> Any:
            if "JPEG" not in shown or label not in shown:
                return None
            return (shown["JPEG"], shown[label])

        def restore(upload_path, reference_path, qf, chroma, picked, n, seed_value, projected, x, y, size,
                    compared, progress=gr.Progress()):
            empty = [None] * (len(views) + len(zooms) + 1 + len(stds)) + [None, "", {}]
            workdir = new_request_folder(workroot)
            picked = [label for label in labels if label in (picked or [])]
            try:
                prepared = prepare_input(upload_path, workdir, int(qf), chroma, reference_path)
                results = compare(bank, picked, prepared, workdir, int(n), int(seed_value or 0), bool(projected),
                                  progress=lambda fraction, text: progress(fraction, desc=text))
            except (OSError, ValueError, RuntimeError) as error:
                return [f"**Error:** {html.escape(str(error))}"] + empty
            except Exception as error:  # never a traceback on the page; the console keeps it
                log.exception("demo request failed")
                return [f"**Error:** {type(error).__name__}: {html.escape(str(error))}"] + empty
            by_label = {r.label: r for r in results if r.images}
            shown = {label: str(r.images[0]) for label, r in by_label.items()}
            view_values = [shown.get("JPEG")] + [shown.get(label) for label in labels]
            std_values = [str(by_label[labels[i]].std_map) if labels[i] in by_label and by_label[labels[i]].std_map
                          else None for i in stochastic]
            files = [str(p) for r in results[1:] for p in r.images + ([r.std_map] if r.std_map else [])]
            if prepared.compressed_here:
                files.insert(0, str(prepared.jpeg_path))
            return ([_status(prepared, results)] + view_values + crops(shown, x, y, size)
                    + [before_after(shown, compared)] + std_values
                    + [files, metrics_table(results), shown])

        outputs = [status, *views, *zooms, slider, *stds.values(), downloads, metrics, state]
        run.click(restore, [upload, reference, quality, layout, chosen, draws, seed, project, zoom_x, zoom_y,
                            zoom_size, slider_method], outputs, concurrency_limit=1)
        for control in (zoom_x, zoom_y, zoom_size):
            control.change(crops, [state, zoom_x, zoom_y, zoom_size], zooms)
        slider_method.change(before_after, [state, slider_method], slider)
    return page


def serve(bank: MethodBank, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Serve the page (requests queued, one restoration at a time) until interrupted."""
    workroot = Path(tempfile.mkdtemp(prefix="jpegrestore-demo-"))
    try:
        page = build_page(bank, workroot)
        page.queue(default_concurrency_limit=1, max_size=32)
        page.launch(server_name=host, server_port=port, share=False, inbrowser=False, ssr_mode=False,
                    allowed_paths=[str(workroot)], footer_links=[], css=CSS)
    finally:
        shutil.rmtree(workroot, ignore_errors=True)
