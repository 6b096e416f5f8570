"""The FastAPI application: thin routes over :class:`~medm3.serve.service.Service`.

Routes (all ``/v1`` routes need the API key when keys are configured; the key,
the ``Host`` name, cross-site requests and body sizes are checked by
:mod:`medm3.serve.guard` before any body is read):

========================================  ==================================================
``GET  /``                                redirect to ``/ui/`` (``/docs`` without the UI)
``GET  /health``                          liveness, model state, queue depth (no key needed)
``GET  /v1/models``                       the served model
``POST /v1/chat/completions``             OpenAI chat completions (+ ``session_id``, ``medm3``)
``POST /v1/files``                        upload a scan (multipart ``file``, ``purpose``)
``GET  /v1/files``                        uploaded files
``GET  /v1/files/{id}``                   one file's record
``GET  /v1/files/{id}/content``           its stored bytes
``DELETE /v1/files/{id}``                 remove an upload
``GET  /v1/experts``                      the experts and their model cards
``POST /v1/experts/{name}/run``           run one expert on uploaded file(s)
``GET  /v1/sessions/{id}``                a stored conversation with traces and file URLs
``DELETE /v1/sessions/{id}``              forget a conversation
``GET  /v1/outputs/{owner}/{path}``       an overlay, label map, result or trace file
``GET  /v1/outputs/{owner}/archive.zip``  all output files of a session or expert run
``/ui``                                   the Gradio web UI (login with the API key)
========================================  ==================================================
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from medm3.errors import MedM3Error
from medm3.serve.errors import APIError, bad_request
from medm3.serve.settings import ServeSettings

if TYPE_CHECKING:  # pragma: no cover
    from fastapi import FastAPI

    from medm3.serve.service import Service

log = logging.getLogger("medm3.serve")


def _error_response(err: APIError) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def create_app(settings: ServeSettings, *, service: Service | None = None) -> FastAPI:
    """Build the app for ``settings``.

    The backend is loaded in a background thread at startup unless
    ``settings.vlm`` holds one (``/health`` says ``loading`` until then, chat
    requests get HTTP 503).

    Args:
        settings: Server settings (validated: an open bind without API keys is refused).
        service: A ready service to use instead of building one from ``settings``.

    Returns:
        The FastAPI app; ``app.state.service`` is the :class:`Service`.

    Raises:
        InputError: Invalid settings.
    """
    from fastapi import FastAPI

    from medm3.serve.service import Service

    svc = service or Service(settings)
    app = FastAPI(
        title="medm3",
        summary="VILA-M3 with expert models, behind an OpenAI-compatible API",
        lifespan=_lifespan(svc),
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.service = svc
    _add_error_handlers(app, svc)
    from medm3.serve.routes import build_router

    app.include_router(build_router(svc))

    @app.get("/", include_in_schema=False)
    async def _home() -> Any:
        from fastapi.responses import RedirectResponse

        return RedirectResponse("/ui/" if settings.ui else "/docs", status_code=307)

    from medm3.serve.guard import RequestGuard

    app.add_middleware(
        RequestGuard,
        api_keys=settings.api_keys,
        allowed_hosts=settings.host_allow_list(),
        json_limit=settings.max_json_bytes,
        upload_limit=settings.max_upload_bytes + 1024 * 1024,
    )
    if settings.ui:
        from medm3.serve.ui import mount_ui

        mount_ui(app, svc)
    return app


def _lifespan(svc: Service) -> Any:
    """Load the backend in a thread at startup (unless ready); close the service at the end."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loader = None
        if svc.backend is None:
            loader = asyncio.get_running_loop().run_in_executor(None, _load_quietly, svc)
        try:
            yield
        finally:
            if loader is not None:
                with contextlib.suppress(Exception):
                    await loader
            svc.close()

    return lifespan


def _add_error_handlers(app: FastAPI, svc: Service) -> None:
    """Every error becomes an OpenAI-style error body (see :mod:`.errors`)."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    @app.exception_handler(APIError)
    async def _api_error(_request: Any, exc: APIError) -> Any:
        return _error_response(svc.api_error(exc))

    @app.exception_handler(MedM3Error)
    async def _medm3_error(_request: Any, exc: MedM3Error) -> Any:
        return _error_response(svc.api_error(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Any, exc: RequestValidationError) -> Any:
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        message = first.get("msg", "invalid request")
        return _error_response(
            bad_request(
                f"{param}: {message}" if param else message, param=param, code="invalid_value"
            )
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Any, exc: StarletteHTTPException) -> Any:
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return _error_response(APIError(exc.status_code, str(exc.detail), type=kind, code=code))

    @app.exception_handler(Exception)
    async def _internal(_request: Any, exc: Exception) -> Any:
        from starlette.requests import ClientDisconnect

        if isinstance(exc, ClientDisconnect):  # not a server error: nobody is listening
            return _error_response(APIError(499, "the client went away", code="cancelled"))
        return _error_response(svc.api_error(exc))


def _load_quietly(svc: Service) -> None:
    start = time.perf_counter()
    try:
        svc.load_backend()
        log.info("model %s loaded in %.1f s", svc.model_id, time.perf_counter() - start)
    except Exception as exc:  # reported by /health and 503s
        log.error("cannot load the model: %s", exc)
