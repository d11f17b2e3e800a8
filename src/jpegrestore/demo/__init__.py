"""``jpegrestore demo``: a local web page that compares restoration methods on your own images.

``compare`` holds the restore logic as plain functions (no web framework: testable on its own), ``page`` the
gradio layout on top of it. gradio is imported only by ``page``; :func:`require_gradio` says how to install it.
"""

from __future__ import annotations

#: How to install the page's dependencies in the pinned environment (gradio caps Pillow below the pinned 13.0.0,
#: so gradio and gradio_client go in without their dependency check, after their other requirements).
INSTALL_COMMAND = ("pip install -r requirements-demo.txt && "
                   "pip install --no-deps gradio==6.31.0 gradio_client==2.7.2   (or: make venv)")


def require_gradio() -> None:
    """ImportError naming the install command when gradio is missing."""
    try:
        import gradio  # noqa: F401
    except ImportError as error:
        raise ImportError(f"jpegrestore demo needs gradio, which is not installed ({error}). "
                          f"Install it with: {INSTALL_COMMAND}") from None
