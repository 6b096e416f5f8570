"""Conversations held by the server: live agent sessions, kept in memory (the most recent
ones) and in the database, answered one question at a time.

A session is created by its first question (its images, mask, experts and
owner are fixed then), saved after every answer (:mod:`.memory`), and
restored from the database when it is used again after it left the memory
cache or the server restarted.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medm3.serve import memory
from medm3.serve.mask import MASK, session_mask, split_mask
from medm3.serve.outputs import expert_files, public_trace
from medm3.serve.protocol import MaskInfo, OutputFile, Usage
from medm3.serve.store import MessageRecord

if TYPE_CHECKING:  # pragma: no cover
    from medm3.agent.session import AgentConfig, AgentReply, ChatSession
    from medm3.serve.files import FileStore
    from medm3.serve.plan import ChatPlan
    from medm3.serve.runner import Job
    from medm3.serve.settings import ServeSettings
    from medm3.serve.store import Store
    from medm3.vlm.base import VLMBackend

#: ``listener((kind, payload))`` receives ``("delta", text)``, ``("event", step)``,
#: ``("done", ChatOutcome)`` and ``("error", exception)`` from a running chat job.
Listener = Callable[[tuple[str, Any]], None]
#: Options fixed when a session is created (stored with it).
FIXED_OPTIONS = ("experts", "use_experts")


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


class Conversations:
    """The server's sessions: a small in-memory cache over the database.

    Args:
        settings: Server settings (agent defaults, cache size).
        files: The file store (images, output folders).
        store: The database.
    """

    def __init__(self, settings: ServeSettings, files: FileStore, store: Store) -> None:
        self.settings = settings
        self.files = files
        self.store = store
        self.root = files.root
        self._sessions: OrderedDict[str, LiveSession] = OrderedDict()
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- lookup
    def exists(self, sid: str, owner: str | None = None) -> bool:
        """Whether session ``sid`` exists and ``owner`` may use it."""
        with self._lock:
            live = self._sessions.get(sid)
            if live is not None:
                return live.owner is None or live.owner == owner
        rec = self.store.get_session(sid)
        return rec is not None and rec.state.get("owner") in (None, owner)

    def images(self, sid: str) -> dict[str, str]:
        """``{name: file id}`` of session ``sid`` (empty when unknown)."""
        with self._lock:
            if sid in self._sessions:
                return dict(self._sessions[sid].images)
        rec = self.store.get_session(sid)
        return rec.images if rec is not None else {}

    def forget(self, sid: str) -> None:
        """Drop ``sid`` from memory (it is reloaded from the database when used again)."""
        with self._lock:
            self._sessions.pop(sid, None)

    # ------------------------------------------------------------------ load
    def live(self, plan: ChatPlan, backend: Callable[[], VLMBackend]) -> LiveSession:
        """The session of ``plan``: in memory, restored from the database, or new.

        Args:
            plan: The checked request.
            backend: Gives the model the agent talks to (called for a session not in memory).
        """
        from medm3.agent.session import ChatSession

        with self._lock:
            live = self._sessions.get(plan.session_id)
            if live is not None:
                self._sessions.move_to_end(plan.session_id)
                return live
        model = backend()
        record = self.store.get_session(plan.session_id)
        if record is not None:
            options = dict(record.state.get("options", {}))
            live = LiveSession(
                plan.session_id,
                record.images,
                list(record.state.get("results", [])),
                options,
                owner=record.state.get("owner"),
            )
        else:
            options = {k: v for k, v in plan.agent.items() if k in FIXED_OPTIONS}
            if plan.labels is not None:
                options["labels"] = plan.labels
            live = LiveSession(plan.session_id, dict(plan.images), [], options, owner=plan.owner)
        prepared = plan.mask if record is None else None
        images, live.mask = self.study(live.images, options.get("labels"), prepared)
        # experts/use_experts are fixed at creation: the stored options win
        config = self.agent_config(plan.session_id, {**plan.agent, **options})
        live.chat = ChatSession(model, images or None, config, on_event=live.dispatch)
        if record is not None:
            memory.restore(live.chat, record.state, self._inside)
        elif plan.history:
            memory.seed_history(live.chat, plan.history)
        with self._lock:
            self._sessions[plan.session_id] = live
            while len(self._sessions) > self.settings.session_cache:
                self._sessions.popitem(last=False)
        return live

    def study(
        self, file_ids: dict[str, str], labels: str | None, prepared: Any = None
    ) -> tuple[dict[str, Any], MaskInfo | None]:
        """The loaded images of a session, its mask named (see :mod:`.mask`)."""
        scans, mask_id = split_mask(file_ids)
        images = {k: self.files.image(v) for k, v in scans.items()}
        if mask_id is None:
            return images, None
        if prepared is None:
            prepared = session_mask(self.files, scans["image"], mask_id, labels)
        images[MASK], info = prepared
        return images, info

    def agent_config(self, sid: str, options: dict[str, Any]) -> AgentConfig:
        """The agent settings of a session: the server's, with the session's options."""
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

    def _inside(self, rel: str) -> Path:
        return self.files.inside(self.root / rel)

    # ------------------------------------------------------------------- ask
    def ask(
        self, plan: ChatPlan, job: Job, listener: Listener | None, backend: Callable[[], Any]
    ) -> ChatOutcome:
        """Answer one question (in a worker thread); the session is saved on success."""
        from medm3.vlm.base import GenerationConfig

        job.check()
        live = self.live(plan, backend)
        with live.lock:
            cfg = live.chat.config
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
                reply = live.chat.ask(plan.question, on_text=on_text if listener else None)
                job.check()
                return self.save(live, plan, reply)
            except BaseException:
                self.forget(live.id)  # reload the last saved state next time
                raise
            finally:
                live.listener = None

    def save(self, live: LiveSession, plan: ChatPlan, reply: AgentReply) -> ChatOutcome:
        """Store the session after an answer; the outcome clients are sent."""
        for folder in memory.result_folders(reply.trace):
            live.results.append(self.files.relative(folder))
        trace = public_trace(self.files, reply.trace)
        state = memory.dump_state(live.chat, live.results, self.root / "state" / live.id, self.root)
        state["options"] = {
            k: list(v) if isinstance(v, tuple) else v for k, v in live.options.items()
        }
        if live.owner is not None:
            state["owner"] = live.owner
        now = int(time.time())
        answer = MessageRecord(
            "assistant",
            reply.text,
            trace=trace,
            files=[self.files.relative(p) for p in reply.files],
            created_at=now,
        )
        self.store.save_session(
            live.id,
            live.images,
            state,
            [MessageRecord("user", plan.question, created_at=now), answer],
        )
        return ChatOutcome(
            session_id=live.id,
            answer=reply.text,
            reply=reply,
            trace=trace,
            files=expert_files(self.files, reply.trace),
            usage=usage(reply.trace),
            mask=live.mask,
        )


def usage(trace: list[dict[str, Any]]) -> Usage:
    """Token counts summed over the generations of a question's trace."""
    steps = [s for s in trace if s.get("step") == "generate"]
    prompt = sum(int(s.get("prompt_tokens") or 0) for s in steps)
    completion = sum(int(s.get("completion_tokens") or 0) for s in steps)
    return Usage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion
    )
