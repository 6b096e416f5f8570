"""``m3 serve``: VILA-M3 as an OpenAI-compatible HTTP service with a web UI.

One process holds one model instance; every client (the official ``openai``
Python client, a browser on ``/ui``, a 3D Slicer module) shares it through a
bounded queue. See :mod:`medm3.serve.app` for the routes and
:mod:`medm3.serve.protocol` for the request/response schema and its ``medm3``
extension.

Importing this package is cheap: FastAPI, uvicorn and Gradio are imported by
the modules that need them, when they are used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medm3.serve.settings import ServeSettings
from medm3.utils.lazy import lazy_getattr

__all__ = ["ServeSettings", "create_app"]

if TYPE_CHECKING:  # pragma: no cover
    from medm3.serve.app import create_app

__getattr__ = lazy_getattr(__name__, {"create_app": "medm3.serve.app"})
