"""Gradio, imported with its usage analytics off: the web UI modules take ``gr`` from here.

``gr`` is a module-level name there (not a function-local import) because
Gradio hands the signed-in request to handlers annotated ``gr.Request``, and
it reads those annotations from the module's names.
"""

import os

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # read when Gradio is imported, just below

import gradio as gr

__all__ = ["gr"]
