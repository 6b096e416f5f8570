"""The service behind the routes: one model instance, the queue, sessions, files, experts.

Routes stay thin: they parse the request into :mod:`medm3.serve.protocol`
models and call a :class:`Service` method, which returns protocol models or
raises :class:`~medm3.serve.errors.APIError`. The web UI calls the same
methods (the ``*_sync`` variants, from Gradio's worker threads).
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medm3.errors import MedM3Error
from medm3.serve import memory
from medm3.serve.errors import APIError, bad_request, from_medm3_error, not_found
from medm3.serve.files import FileStore, new_id
from medm3.serve.mask import MASK, session_mask, split_mask
from medm3.serve.plan import ChatPlan, build_plan
from medm3.serve.protocol import (
    ChatCompletionRequest,
    ExpertRunRequest,
    ExpertRunResponse,
    FileObject,
    Health,
    MaskInfo,
    ModelCard,
    ModelList,
    OutputFile,
    SessionMessage,
    SessionObject,
    Usage,
)
from medm3.serve.runner import Job, JobCancelledError, ModelRunner
from medm3.serve.settings import ServeSettings
from medm3.serve.store import FileRecord, MessageRecord, Store

if TYPE_CHECKING:  # pragma: no cover
    from medm3.agent.session import AgentReply, ChatSession
    from medm3.serve.batching import BatchingBackend
    from medm3.vlm.base import VLMBackend

log = logging.getLogger("medm3.serve")

#: ``listener((kind, payload))`` receives ``("delta", text)``, ``("event", step)``,
#: ``("done", ChatOutcome)`` and ``("error", exception)`` from a running chat job.
Listener = Callable[[tuple[str, Any]], None]


@dataclass
class ChatOutcome:
    """A finished question.

    Attributes:
        session_id: The session.
        answer: The final answer.
        reply: The agent's reply.
        trace: The question's trace with file paths replaced by URLs.
        files: Every file written (URLs).
        usage: Token counts.
        mask: The session's label map (``medm3.mask``), if any.
    """

    session_id: str
    answer: str
    reply: AgentReply
    trace: list[dict[str, Any]]
    files: list[OutputFile]
    usage: Usage
    mask: MaskInfo | None = None

    @property
    def overlays(self) -> list[OutputFile]:
        """The overlay images among :attr:`files`."""
        return [f for f in self.files if f.kind == "overlay"]


@dataclass
class LiveSession:
    """A conversation held in memory."""

    id: str
    images: dict[str, str]
    results: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    listener: Listener | None = None
    owner: str | None = None
    mask: MaskInfo | None = None
    chat: ChatSession = field(init=False)

    def dispatch(self, step: dict[str, Any]) -> None:
        """Forward a trace step to the current job's listener."""
        if self.listener is not None and step.get("step") in ("expert", "expert_error"):
            self.listener(("event", step))


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
        self._sessions: OrderedDict[str, LiveSession] = OrderedDict()
        self._sessions_lock = threading.Lock()

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
        facts = {**rec.meta, "format": rec.kind, "sha256": rec.sha256}
        facts["deidentified"] = rec.deidentified
        return FileObject(
            id=rec.id,
            bytes=rec.bytes,
            created_at=rec.created_at,
            filename=rec.filename,
            purpose=rec.purpose,
            medm3=facts,
        )

    def output_url(self, path: str | Path) -> str:
        """The download URL of a file inside ``outputs/``."""
        rel = self.files.relative(path)
        return "/v1/" + rel

    def _output_files(self, steps: list[dict[str, Any]]) -> list[OutputFile]:
        out: list[OutputFile] = []
        for step in steps:
            if step.get("step") != "expert":
                continue
            overlays = step.get("result", {}).get("overlays", [])
            captions = {o.get("name"): o.get("caption") or None for o in overlays}
            for path in step.get("files", []):
                name = Path(path).name
                kind = _kind(name)
                out.append(
                    OutputFile(
                        url=self.output_url(path),
                        name=name,
                        kind=kind,
                        expert=step.get("expert"),
                        caption=captions.get(Path(name).stem) if kind == "overlay" else None,
                    )
                )
        return out

    def public_trace(self, steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Trace steps as JSON with server file paths replaced by download URLs."""
        public = copy.deepcopy(steps)
        for step in public:
            if "files" in step:
                step["files"] = [self.output_url(p) for p in step["files"]]
        return json.loads(json.dumps(public, default=str))

    # ------------------------------------------------------------------ chat
    def plan(self, req: ChatCompletionRequest, owner: str | None = None) -> ChatPlan:
        """Check a chat request (blocking: stores data-URL images); see :mod:`~.plan`.

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
            session_exists=lambda sid: self._session_exists(sid, owner),
            session_images=lambda sid: self._session_record_images(sid),
        )
        plan.owner = owner
        scans, mask_id = split_mask(plan.images)
        if mask_id is not None and not plan.resumed:  # refused now, not in the worker
            plan.mask = session_mask(self.files, scans["image"], mask_id, plan.labels)
        return plan

    def _session_exists(self, sid: str, owner: str | None = None) -> bool:
        """Whether session ``sid`` exists and ``owner`` may use it."""
        with self._sessions_lock:
            live = self._sessions.get(sid)
            if live is not None:
                return live.owner is None or live.owner == owner
        rec = self.store.get_session(sid)
        return rec is not None and rec.state.get("owner") in (None, owner)

    def _session_record_images(self, sid: str) -> dict[str, str]:
        with self._sessions_lock:
            if sid in self._sessions:
                return dict(self._sessions[sid].images)
        rec = self.store.get_session(sid)
        return rec.images if rec is not None else {}

    def _agent_config(self, sid: str, options: dict[str, Any]) -> Any:
        from medm3.agent.session import AgentConfig

        s = self.settings
        return AgentConfig(
            experts=options.get("experts", s.experts),
            use_experts=options.get("use_experts", s.use_experts),
            max_rounds=s.max_rounds,
            protocol=s.protocol,
            plane=options.get("plane", "axial"),
            slice_index=options.get("slice_index"),
            window=options.get("window", "auto"),
            device=s.expert_device,
            weights=dict(s.weights),
            output_dir=self.files.output_dir(sid),
        )

    def _live(self, plan: ChatPlan) -> LiveSession:
        """The session of ``plan``: in memory, restored from the database, or new."""
        from medm3.agent.session import ChatSession

        with self._sessions_lock:
            live = self._sessions.get(plan.session_id)
            if live is not None:
                self._sessions.move_to_end(plan.session_id)
                return live
        backend = self._ready_backend()
        record = self.store.get_session(plan.session_id)
        if record is not None:
            options = dict(record.state.get("options", {}))
            results = list(record.state.get("results", []))
            file_ids = record.images
            prepared = None
        else:
            options = {k: v for k, v in plan.agent.items() if k in ("experts", "use_experts")}
            if plan.labels is not None:
                options["labels"] = plan.labels
            results = []
            file_ids = dict(plan.images)
            prepared = plan.mask
        images, mask_info = self._study(file_ids, options.get("labels"), prepared)
        owner = record.state.get("owner") if record is not None else plan.owner
        live = LiveSession(plan.session_id, file_ids, results, options, owner=owner)
        live.mask = mask_info
        # experts/use_experts are fixed at creation: the stored options win
        config = self._agent_config(plan.session_id, {**plan.agent, **options})
        live.chat = ChatSession(
            self._session_backend(backend), images or None, config, on_event=live.dispatch
        )
        if record is not None:
            memory.restore(live.chat, record.state, self._inside)
        elif plan.history:
            memory.seed_history(live.chat, plan.history)
        with self._sessions_lock:
            self._sessions[plan.session_id] = live
            while len(self._sessions) > self.settings.session_cache:
                self._sessions.popitem(last=False)
        return live

    def _study(
        self, file_ids: dict[str, str], labels: str | None, prepared: Any = None
    ) -> tuple[dict[str, Any], MaskInfo | None]:
        """The loaded images of a session (its mask named, see :mod:`.mask`)."""
        scans, mask_id = split_mask(file_ids)
        images = {k: self.files.image(v) for k, v in scans.items()}
        if mask_id is None:
            return images, None
        if prepared is None:
            prepared = session_mask(self.files, scans["image"], mask_id, labels)
        images[MASK], info = prepared
        return images, info

    def _inside(self, rel: str) -> Path:
        return self.files.inside(self.root / rel)

    def _forget(self, sid: str) -> None:
        with self._sessions_lock:
            self._sessions.pop(sid, None)

    def run_chat(self, plan: ChatPlan, job: Job, listener: Listener | None) -> ChatOutcome:
        """Answer one question (in a worker thread); persists the session on success."""
        from medm3.vlm.base import GenerationConfig

        job.check()
        live = self._live(plan)
        with live.lock:
            chat = live.chat
            cfg = chat.config
            cfg.generation = plan.generation or GenerationConfig()
            cfg.max_rounds = plan.agent.get("max_rounds", self.settings.max_rounds)
            for key in ("plane", "slice_index", "window"):
                if key in plan.agent:
                    setattr(cfg, key, plan.agent[key])

            def on_text(delta: str) -> None:
                job.check()
                if listener is not None:
                    listener(("delta", delta))

            live.listener = listener
            try:
                reply = chat.ask(plan.question, on_text=on_text if listener else None)
                job.check()
                outcome = self._persist(live, plan, reply)
            except BaseException:
                self._forget(live.id)  # reload the last saved state next time
                raise
            finally:
                live.listener = None
        return outcome

    def _persist(self, live: LiveSession, plan: ChatPlan, reply: AgentReply) -> ChatOutcome:
        for folder in memory.result_folders(reply.trace):
            live.results.append(self.files.relative(folder))
        trace = self.public_trace(reply.trace)
        files = self._output_files(reply.trace)
        state = memory.dump_state(live.chat, live.results, self.root / "state" / live.id, self.root)
        state["options"] = {
            k: list(v) if isinstance(v, tuple) else v for k, v in live.options.items()
        }
        if live.owner is not None:
            state["owner"] = live.owner
        now = int(time.time())
        self.store.save_session(
            live.id,
            live.images,
            state,
            [
                MessageRecord("user", plan.question, created_at=now),
                MessageRecord(
                    "assistant",
                    reply.text,
                    trace=trace,
                    files=[self.files.relative(p) for p in reply.files],
                    created_at=now,
                ),
            ],
        )
        steps = [s for s in reply.trace if s.get("step") == "generate"]
        prompt = sum(int(s.get("prompt_tokens") or 0) for s in steps)
        completion = sum(int(s.get("completion_tokens") or 0) for s in steps)
        return ChatOutcome(
            session_id=live.id,
            answer=reply.text,
            reply=reply,
            trace=trace,
            files=files,
            usage=Usage(
                prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
            ),
            mask=live.mask,
        )

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
        from medm3.serve.files import OWNER_ID_RE

        rec = self.store.get_session(sid) if OWNER_ID_RE.match(sid) else None
        if rec is None or rec.state.get("owner") not in (None, owner):
            raise not_found(f"no session with id {sid[:80]}", code="session_not_found")
        messages = []
        for m in self.store.messages(sid):
            files = [
                OutputFile(url="/v1/" + p, name=Path(p).name, kind=_kind(Path(p).name))
                for p in m.files
            ]
            messages.append(
                SessionMessage(
                    role=m.role,
                    content=m.content,
                    created_at=m.created_at,
                    files=files,
                    trace=m.trace,
                )
            )
        return SessionObject(
            id=rec.id,
            created_at=rec.created_at,
            updated_at=rec.updated_at,
            images=rec.images,
            messages=messages,
            archive_url=f"/v1/outputs/{sid}/archive.zip",
        )

    def delete_session(self, sid: str, owner: str | None = None) -> None:
        """Forget a session (its output files stay until removed by the operator)."""
        from medm3.serve.files import OWNER_ID_RE

        if not OWNER_ID_RE.match(sid) or not self.check_owner(sid, owner):
            raise not_found(f"no session with id {sid[:80]}", code="session_not_found")
        if not self.store.delete_session(sid):
            raise not_found(f"no session with id {sid[:80]}", code="session_not_found")
        self._forget(sid)

    def check_owner(self, owner_id: str, owner: str | None) -> bool:
        """Whether the key ``owner`` may read ``owner_id``'s session or outputs (an
        output folder that is not a session, such as an expert run, is open to all keys)."""
        rec = self.store.get_session(owner_id)
        return rec is None or rec.state.get("owner") in (None, owner)

    # ---------------------------------------------------------------- experts
    @staticmethod
    def experts() -> list[dict[str, Any]]:
        """``GET /v1/experts``: ``describe()`` of every registered expert."""
        from medm3.experts.registry import expert_names, get_expert_class

        out = []
        for name in expert_names():
            try:
                out.append({"object": "expert", **get_expert_class(name).describe()})
            except MedM3Error:  # a broken plugin must not break the listing
                continue
        return out

    def expert_run_job(self, name: str, req: ExpertRunRequest) -> Callable[[], ExpertRunResponse]:
        """Check an expert run request; return the job that runs it (in a worker).

        Raises:
            APIError: Unknown expert (404), missing/invalid inputs (400/404).
        """
        from medm3.errors import InputError
        from medm3.experts.registry import get_expert_class

        try:
            cls = get_expert_class(name)
        except InputError as exc:
            raise not_found(exc.message, code="expert_not_found") from None
        if req.inputs:
            inputs = {k.lower(): v for k, v in req.inputs.items()}
        elif req.file_id:
            inputs = {cls.inputs[0]: req.file_id}
        else:
            raise bad_request("give file_id (or inputs: {name: file_id})", param="file_id")
        for key, file_id in inputs.items():
            self.files.record(file_id, param=f"inputs.{key}")
        _check_weights(cls, self.settings.weights.get(cls.name))

        def job() -> ExpertRunResponse:
            from medm3.experts.base import RunContext
            from medm3.experts.output import save_result
            from medm3.experts.registry import get_expert

            images = {k: self.files.image(v) for k, v in inputs.items()}
            expert = get_expert(
                cls.name,
                device=self.settings.expert_device,
                weights=self.settings.weights.get(cls.name),
            )
            context = RunContext(
                plane=req.plane, slice_index=req.slice_index, options=dict(req.options)
            )
            result = expert.run(images, req.args, context=context)
            run_id = new_id("run")
            main = images.get(cls.inputs[0]) or next(iter(images.values()))
            written = save_result(result, self.files.output_dir(run_id), source_image=main)
            files = [
                OutputFile(
                    url=self.output_url(p),
                    name=Path(p).name,
                    kind=_kind(Path(p).name),
                    expert=cls.name,
                )
                for p in written.values()
            ]
            return ExpertRunResponse(
                id=run_id,
                created=int(time.time()),
                expert=cls.name,
                result=json.loads(json.dumps(result.to_dict(), default=str)),
                overlays=[f for f in files if f.kind == "overlay"],
                files=files,
                archive_url=f"/v1/outputs/{run_id}/archive.zip",
            )

        return job

    # ---------------------------------------------------------------- outputs
    def archive(self, owner: str) -> Path:
        """A zip of a session's or expert run's outputs, built in ``tmp/``.

        It holds ``outputs/<owner>/`` (overlays, label maps, result JSON) and, for a
        session, ``trace.json``: every question and answer with its trace.

        Raises:
            APIError: 404 for an unknown owner.
        """
        folder = self.files.output_dir(owner)
        if not folder.is_dir() and self.store.get_session(owner) is None:
            raise not_found("no such output", code="output_not_found")
        folder = self.files.inside(folder)
        dest = self.files.tmp_path().with_suffix(".zip")
        with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(folder.rglob("*")):
                if path.is_file() and not path.is_symlink() and not path.name.startswith("."):
                    zf.write(path, path.relative_to(folder).as_posix())
            turns = self.store.messages(owner)
            if turns:  # a session: its questions, answers and traces
                doc = [
                    {"role": m.role, "content": m.content, "trace": m.trace, "files": m.files}
                    for m in turns
                ]
                zf.writestr("trace.json", json.dumps(doc, indent=2, default=str) + "\n")
        return dest


def _check_weights(cls: Any, override: Path | None = None) -> None:
    """Refuse an expert run at once (HTTP 503) when the expert's weights are not in the
    configured folder or the caches, before anything heavy is imported or queued."""
    from medm3.experts.catalogue import WeightsNotFoundError, find_weights, missing_files

    name = getattr(cls, "weights_name", None)
    if not name:
        return
    missing = missing_files(name, override) if override is not None else find_weights(name) is None
    if missing:
        raise WeightsNotFoundError(f"weights for expert '{name}' are not installed")


def _kind(name: str) -> str:
    if name == "result.json":
        return "result"
    if "_labels." in name:
        return "label_map"
    if name == "trace.json":
        return "trace"
    if name.endswith("_seg.dcm"):
        return "dicom_seg"
    return "overlay" if name.endswith(".png") else "file"
