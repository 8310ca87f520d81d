"""``sradm demo``: a Gradio web page for the model (needs the ``[demo]`` extra: ``pip install -e ".[demo]"``).

:mod:`.runner` does the work of one request without Gradio; :mod:`.app` is the page. The Spaces copy in
``spaces/sradm-demo/`` runs :func:`launch`.
"""

from __future__ import annotations

from ..runtime import UsageError
from .runner import DemoResult, DemoRunner


def launch(model: str | None = None, host: str | None = None, port: int | None = None, device: str | None = None):
    """Serve the demo page (see :func:`sradm_diffusers.demo.app.launch`).

    Raises:
        UsageError: Gradio is not installed (the message names the extra), or the model cannot be loaded.
    """
    try:
        from . import app
    except ImportError as error:
        if error.name != "gradio":
            raise
        raise UsageError('the web demo needs Gradio: pip install "sradm-diffusers[demo]" (or -e ".[demo]").') from error
    app.launch(model=model, host=host, port=port, device=device)


__all__ = ["DemoResult", "DemoRunner", "launch"]
