"""The service behind the routes: one model instance, the queue, sessions, files, experts.

Routes stay thin: they parse the request into :mod:`medm3.serve.protocol`
models and call a :class:`Service` method, which returns protocol models or
raises :class:`~medm3.serve.errors.APIError`. The web UI calls the same
methods (from Gradio's worker threads). The service holds the model and the
queue itself; conversations live in :mod:`.conversations`, expert runs in
:mod:`.expert_runs`, and what clients see of outputs in :mod:`.outputs`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medm3.errors import MedM3Error
from medm3.serve import outputs
from medm3.serve.conversations import ChatOutcome, Conversations, Listener
from medm3.serve.errors import APIError, from_medm3_error, not_found
from medm3.serve.expert_runs import expert_run_job, list_experts
from medm3.serve.files import OWNER_ID_RE, FileStore
from medm3.serve.mask import session_mask, split_mask
from medm3.serve.plan import ChatPlan, build_plan
from medm3.serve.protocol import (
    ChatCompletionRequest,
    ExpertRunRequest,
    ExpertRunResponse,
    FileObject,
    Health,
    ModelCard,
    ModelList,
    SessionObject,
)
from medm3.serve.runner import Job, JobCancelledError, ModelRunner
from medm3.serve.settings import ServeSettings
from medm3.serve.store import FileRecord, Store

if TYPE_CHECKING:  # pragma: no cover
    from medm3.serve.batching import BatchingBackend
    from medm3.vlm.base import VLMBackend

log = logging.getLogger("medm3.serve")


class Service:
    """State shared by all requests of one server.

    Args:
        settings: Server settings (validated here).
    """

    def __init__(self, settings: ServeSettings) -> None:
        settings.validate()
        self.settings = settings
        self.root = settings.data_dir.resolve()
        self.store = Store(self.root)
        self.files = FileStore(
            self.root,
            self.store,
            max_bytes=settings.max_upload_bytes,
            deid=settings.deid,
            deid_key=settings.deid_key,
            max_image_bytes=settings.max_image_bytes,
        )
        workers = max(settings.workers, settings.batch_size)  # batching: one agent loop each
        self.runner = ModelRunner(workers, settings.max_queue, settings.request_timeout_s)
        self.backend: VLMBackend | None = settings.vlm
        self.load_error: str | None = None
        self.started = time.time()
        self._backend_lock = threading.Lock()
        self._batcher: BatchingBackend | None = None
        self.conversations = Conversations(settings, self.files, self.store)

    # ----------------------------------------------------------------- model
    @property
    def model_id(self) -> str:
        """The model name clients use."""
        if self.settings.model_name:
            return self.settings.model_name
        if self.backend is not None:
            return self.backend.model_id
        return self.settings.model or self.settings.backend

    def load_backend(self) -> VLMBackend:
        """Load the backend once (blocking); later calls return it.

        Raises:
            MedM3Error: The backend or model cannot be loaded.
        """
        with self._backend_lock:
            if self.backend is None:
                from medm3.vlm.registry import default_model, load_backend

                model = self.settings.model or default_model(self.settings.backend)
                try:
                    self.backend = load_backend(
                        self.settings.backend, model, **self.settings.backend_options
                    )
                except Exception as exc:
                    self.load_error = str(exc)
                    raise
                self.load_error = None
            return self.backend

    def _ready_backend(self) -> VLMBackend:
        if self.backend is None:
            if self.load_error:
                raise APIError(
                    503,
                    f"the model failed to load: {self.load_error}",
                    type="server_error",
                    code="model_unavailable",
                )
            raise APIError(
                503,
                "the model is still loading; retry shortly",
                type="server_error",
                code="model_loading",
                headers={"Retry-After": "10"},
            )
        return self.backend

    def _session_backend(self, backend: VLMBackend) -> VLMBackend:
        """What agent loops talk to: the backend, or its batching proxy (``batch_size`` > 1)."""
        if self.settings.batch_size <= 1:
            return backend
        with self._backend_lock:
            if self._batcher is None or self._batcher.inner is not backend:
                from medm3.serve.batching import BatchingBackend

                self._batcher = BatchingBackend(
                    backend,
                    self.settings.batch_size,
                    self.settings.batch_wait_ms,
                    active=lambda: self.runner.running,
                )
            return self._batcher

    def check_model(self, name: str) -> None:
        """Accept the served model's name (or ``medm3``); 404 otherwise."""
        names = {self.model_id, "medm3"}
        if self.backend is not None:
            names.add(self.backend.model_id)
        if name not in names:
            raise not_found(
                f"the model '{name}' does not exist; this server serves '{self.model_id}'",
                code="model_not_found",
                param="model",
            )

    def models(self) -> ModelList:
        """``GET /v1/models``."""
        return ModelList(data=[ModelCard(id=self.model_id, created=int(self.started))])

    def health(self) -> Health:
        """``GET /health``."""
        status = "ok" if self.backend is not None else ("error" if self.load_error else "loading")
        return Health(
            status=status,
            model=self.model_id,
            backend=self.backend.name if self.backend is not None else self.settings.backend,
            running=self.runner.running,
            waiting=self.runner.waiting,
            capacity=self.runner.capacity,
            uptime_s=round(time.time() - self.started, 3),
        )

    def close(self) -> None:
        """Stop the workers, release the model and close the database."""
        self.runner.close()
        if self._batcher is not None:
            self._batcher.stop()
        if self.backend is not None and self.settings.vlm is None:
            self.backend.close()
        self.store.close()

    def scrub(self, message: str) -> str:
        """A message with the data folder's absolute path hidden."""
        return message.replace(str(self.root), "<data>")

    def api_error(self, exc: BaseException) -> APIError:
        """The HTTP error of any exception raised by a job."""
        if isinstance(exc, APIError):
            err = exc
        elif isinstance(exc, MedM3Error):
            err = from_medm3_error(exc)
        else:
            log.error("internal error", exc_info=exc)
            return APIError(
                500, "internal server error", type="server_error", code="internal_error"
            )
        err.message = self.scrub(err.message)
        return err

    # ----------------------------------------------------------------- files
    @staticmethod
    def file_object(rec: FileRecord) -> FileObject:
        """The API view of a stored file."""
        return outputs.file_object(rec)

    def output_url(self, path: str | Path) -> str:
        """The download URL of a file inside ``outputs/``."""
        return outputs.output_url(self.files, path)

    def public_trace(self, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Trace steps as JSON with server file paths replaced by download URLs."""
        return outputs.public_trace(self.files, steps)

    # ------------------------------------------------------------------ chat
    def plan(self, req: ChatCompletionRequest, owner: str | None = None) -> ChatPlan:
        """Check a chat request (blocking: stores data-URL images); see :mod:`~.plan`.

        A new session's mask is checked against its image here, before the request
        is queued (see :mod:`~.mask`).

        Args:
            req: The request.
            owner: Fingerprint of the API key that sent it (several keys configured):
                only that key's sessions can be continued.
        """
        self._ready_backend()
        self.check_model(req.model)
        plan = build_plan(
            req,
            self.files,
            self.settings,
            session_exists=lambda sid: self.conversations.exists(sid, owner),
            session_images=self.conversations.images,
        )
        plan.owner = owner
        scans, mask_id = split_mask(plan.images)
        if mask_id is not None and not plan.resumed:  # refused now, not in the worker
            plan.mask = session_mask(self.files, scans["image"], mask_id, plan.labels)
        return plan

    def run_chat(self, plan: ChatPlan, job: Job, listener: Listener | None) -> ChatOutcome:
        """Answer one question (in a worker thread); persists the session on success."""
        backend = lambda: self._session_backend(self._ready_backend())  # noqa: E731
        return self.conversations.ask(plan, job, listener, backend)

    async def chat(self, plan: ChatPlan) -> ChatOutcome:
        """Answer a non-streamed request through the queue."""
        job = Job()
        try:
            return await self.runner.run(lambda: self.run_chat(plan, job, None))
        except BaseException:
            job.cancel()
            raise

    def start_chat(self, plan: ChatPlan, listener: Listener, job: Job) -> None:
        """Queue a streamed chat; results and errors arrive through ``listener``.

        Raises:
            QueueFullError: No room (raised before anything is streamed).
        """

        def work() -> None:
            try:
                listener(("done", self.run_chat(plan, job, listener)))
            except JobCancelledError:
                listener(("error", APIError(499, "cancelled", code="cancelled")))
            except BaseException as exc:
                listener(("error", exc))

        job.future = self.runner.submit(work)

    # --------------------------------------------------------------- sessions
    def session(self, sid: str, owner: str | None = None) -> SessionObject:
        """``GET /v1/sessions/{id}`` (404 for another key's session)."""
        rec = self.store.get_session(sid) if OWNER_ID_RE.match(sid) else None
        if rec is None or rec.state.get("owner") not in (None, owner):
            raise not_found(f"no session with id {sid[:80]}", code="session_not_found")
        return outputs.session_object(self.store, rec)

    def delete_session(self, sid: str, owner: str | None = None) -> None:
        """Forget a session (its output files stay until removed by the operator)."""
        if not OWNER_ID_RE.match(sid) or not self.check_owner(sid, owner):
            raise not_found(f"no session with id {sid[:80]}", code="session_not_found")
        if not self.store.delete_session(sid):
            raise not_found(f"no session with id {sid[:80]}", code="session_not_found")
        self.conversations.forget(sid)

    def check_owner(self, owner_id: str, owner: str | None) -> bool:
        """Whether the key ``owner`` may read ``owner_id``'s session or outputs (an
        output folder that is not a session, such as an expert run, is open to all keys)."""
        rec = self.store.get_session(owner_id)
        return rec is None or rec.state.get("owner") in (None, owner)

    # ---------------------------------------------------------------- experts
    @staticmethod
    def experts() -> list[dict[str, Any]]:
        """``GET /v1/experts``: ``describe()`` of every registered expert."""
        return list_experts()

    def expert_run_job(self, name: str, req: ExpertRunRequest) -> Callable[[], ExpertRunResponse]:
        """Check an expert run request; return the job that runs it (see :mod:`.expert_runs`)."""
        return expert_run_job(self.files, self.settings, name, req)

    # ---------------------------------------------------------------- outputs
    def archive(self, owner: str) -> Path:
        """A zip of a session's or expert run's outputs (see :func:`.outputs.build_archive`)."""
        return outputs.build_archive(self.files, self.store, owner)
