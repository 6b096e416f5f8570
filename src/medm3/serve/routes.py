"""The HTTP routes (see :mod:`medm3.serve.app` for the list). Each one: parse, call, return."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, StreamingResponse
from starlette.background import BackgroundTask

from medm3.serve.errors import APIError, bad_request
from medm3.serve.files import new_id
from medm3.serve.guard import OWNER_SCOPE_KEY
from medm3.serve.protocol import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    ExpertList,
    ExpertRunRequest,
    ExpertRunResponse,
    FileDeleted,
    FileList,
    FileObject,
    Health,
    ModelList,
    SessionObject,
    invalid_unicode,
)
from medm3.serve.streaming import finish_reason, medm3_result, start_stream
from medm3.serve.upload import is_json, receive_reference, receive_upload

if TYPE_CHECKING:  # pragma: no cover
    from medm3.serve.service import Service


def build_router(svc: Service) -> APIRouter:
    """All routes of the API, bound to ``svc``.

    The API key, ``Host``, cross-site and body-size checks happen before the
    routes, in :class:`~medm3.serve.guard.RequestGuard`.
    """
    root = APIRouter()
    api = APIRouter(prefix="/v1")

    @root.get("/health", response_model=Health)
    async def health() -> Health:
        return svc.health()

    @api.get("/models", response_model=ModelList)
    async def models() -> ModelList:
        return svc.models()

    _chat_routes(api, svc)
    _file_routes(api, svc)
    _expert_routes(api, svc)
    _session_routes(api, svc)
    root.include_router(api)
    return root


def _chat_routes(api: APIRouter, svc: Service) -> None:
    """``POST /v1/chat/completions`` (streamed or not)."""

    @api.post("/chat/completions", response_model=None)
    async def chat_completions(req: ChatCompletionRequest, request: Request) -> Any:
        _check_unicode(req)
        plan = await asyncio.to_thread(svc.plan, req, _owner(request))
        completion_id = new_id("chatcmpl")
        if plan.stream:
            events = start_stream(svc, plan, completion_id)
            return StreamingResponse(
                events,
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        out = await _answered(request, svc, svc.chat(plan))
        choice = Choice(
            message=AssistantMessage(content=out.answer), finish_reason=finish_reason(out)
        )
        return ChatCompletion(
            id=completion_id,
            created=_now(),
            model=plan.model,
            choices=[choice],
            usage=out.usage,
            medm3=medm3_result(svc, out),
        )


def _file_routes(api: APIRouter, svc: Service) -> None:
    """``/v1/files``: upload (a file, or a PACS series by reference), list, read, delete."""

    @api.post("/files", response_model=FileObject)
    async def upload_file(request: Request) -> FileObject:
        if is_json(request):  # by reference: {"dicomweb": "dicomweb+https://..."}
            reference, series, purpose = await receive_reference(request)
            rec = await asyncio.to_thread(
                svc.files.ingest_reference,
                reference,
                series,
                purpose,
                root=svc.settings.dicomweb,
            )
            return svc.file_object(rec)
        tmp = svc.files.tmp_path()
        got = await receive_upload(request, tmp, svc.settings.max_upload_bytes)
        if got.path is None:
            raise APIError(400, "the request has no 'file' part", param="file")
        purpose = got.fields.get("purpose", "user_data")[:64] or "user_data"
        rec = await asyncio.to_thread(svc.files.ingest, got.path, got.filename, purpose)
        return svc.file_object(rec)

    @api.get("/files", response_model=FileList)
    async def list_files() -> FileList:
        return FileList(data=[svc.file_object(r) for r in svc.store.list_files()])

    @api.get("/files/{file_id}", response_model=FileObject)
    async def get_file(file_id: str) -> FileObject:
        return svc.file_object(svc.files.record(file_id, param="file_id"))

    @api.get("/files/{file_id}/content")
    async def file_content(file_id: str) -> FileResponse:
        rec = svc.files.record(file_id, param="file_id")
        path = svc.files.resolve(file_id, param="file_id")
        return FileResponse(path, filename=path.name, media_type=_media_type(rec.kind))

    @api.delete("/files/{file_id}", response_model=FileDeleted)
    async def delete_file(file_id: str) -> FileDeleted:
        svc.files.delete(file_id)
        return FileDeleted(id=file_id)


def _expert_routes(api: APIRouter, svc: Service) -> None:
    """``GET /v1/experts`` and ``POST /v1/experts/{name}/run``."""

    @api.get("/experts", response_model=ExpertList)
    async def experts() -> ExpertList:
        return ExpertList(data=svc.experts())

    @api.post("/experts/{name}/run", response_model=ExpertRunResponse)
    async def run_expert(name: str, req: ExpertRunRequest, request: Request) -> ExpertRunResponse:
        _check_unicode(req)
        job = svc.expert_run_job(name, req)
        return await _answered(request, svc, svc.runner.run(job))


def _session_routes(api: APIRouter, svc: Service) -> None:
    """``/v1/sessions/{id}`` and ``/v1/outputs/{owner}/...`` (checked against the key)."""

    @api.get("/sessions/{session_id}", response_model=SessionObject)
    async def get_session(session_id: str, request: Request) -> SessionObject:
        return svc.session(session_id, _owner(request))

    @api.delete("/sessions/{session_id}")
    async def delete_session(session_id: str, request: Request) -> dict[str, Any]:
        svc.delete_session(session_id, _owner(request))
        return {"id": session_id, "object": "session", "deleted": True}

    @api.get("/outputs/{owner}/archive.zip")
    async def archive(owner: str, request: Request) -> FileResponse:
        _check_owner(svc, owner, request)
        path = await asyncio.to_thread(svc.archive, owner)
        return FileResponse(
            path,
            filename=f"{owner}.zip",
            media_type="application/zip",
            background=BackgroundTask(path.unlink, missing_ok=True),
        )

    @api.get("/outputs/{owner}/{path:path}")
    async def output_file(owner: str, path: str, request: Request) -> FileResponse:
        _check_owner(svc, owner, request)
        return FileResponse(svc.files.output_path(owner, path))


async def _answered(request: Request, svc: Service, work: Any) -> Any:
    """The result of queued ``work`` unless the client left first; its errors as HTTP errors."""
    try:
        return await _unless_disconnected(request, work)
    except BaseException as exc:
        if isinstance(exc, asyncio.CancelledError):
            raise
        raise svc.api_error(exc) from None


def _owner(request: Request) -> str | None:
    """Fingerprint of the request's API key when several keys are configured."""
    return request.scope.get(OWNER_SCOPE_KEY)


def _check_owner(svc: Service, owner_id: str, request: Request) -> None:
    from medm3.serve.errors import not_found

    if not svc.check_owner(owner_id, _owner(request)):
        raise not_found("no such output", code="output_not_found")


def _check_unicode(req: Any) -> None:
    where = invalid_unicode(req)
    if where is not None:
        raise bad_request("the request holds text that is not valid Unicode", param=where)


async def _unless_disconnected(request: Request, work: Any) -> Any:
    """Await ``work``; cancel it when the client disconnects first (its queued job is
    dropped, a running one stops at its next check and is not saved)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    if task.cancelled():  # nobody is listening any more; this answer is not sent
        raise APIError(499, "the client went away", code="cancelled")
    return task.result()


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _now() -> int:
    import time

    return int(time.time())


def _media_type(kind: str) -> str:
    return {
        "png": "image/png",
        "jpeg": "image/jpeg",
        "dicom": "application/dicom",
        "dicom_zip": "application/zip",
    }.get(kind, "application/octet-stream")
