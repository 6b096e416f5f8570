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

from typing import TYPE_CHECKING, Any

from medm3.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]

if TYPE_CHECKING:  # pragma: no cover
    from medm3.serve.app import create_app


def __getattr__(name: str) -> Any:
    """Resolve :func:`create_app` lazily (it imports FastAPI)."""
    if name == "create_app":
        from medm3.serve.app import create_app

        return create_app
    raise AttributeError(f"module 'medm3.serve' has no attribute {name!r}")
