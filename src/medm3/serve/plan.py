"""A chat request checked and turned into a :class:`ChatPlan` (before any model work).

Everything that can be refused cheaply is refused here, with the parameter at
fault: unknown model, ``n > 1``, tool messages, remote image URLs, malformed
file ids, unknown experts, a session asked about another study.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from medm3.serve import mask
from medm3.serve.errors import bad_request, not_found
from medm3.serve.files import FILE_ID_RE, OWNER_ID_RE, new_id
from medm3.serve.protocol import (
    ChatCompletionRequest,
    FileContent,
    ImageURLContent,
    TextContent,
)

if TYPE_CHECKING:  # pragma: no cover
    from medm3.serve.files import FileStore
    from medm3.serve.settings import ServeSettings
    from medm3.vlm.base import GenerationConfig

#: ``medm3://file/<id>`` references to uploaded files.
FILE_URL_RE = re.compile(r"^medm3://file/(?P<id>[^/?#]+)$")
_DATA_URL_RE = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[\w=.+-]+)*;base64,", re.I)


@dataclass
class ChatPlan:
    """What one chat request asks for.

    Attributes:
        session_id: The session (given or new).
        question: The last user message's text.
        history: Earlier ``(role, text)`` turns (stateless requests only).
        images: Input name -> file id.
        generation: Decoding settings.
        agent: Agent overrides (plane, slice_index, window, experts, use_experts,
            max_rounds); absent keys keep the session's/server's value.
        stream: Streamed response wanted.
        include_usage: Send a usage chunk at the end of a stream.
        model: The model name to report.
        owner: Fingerprint of the API key that sent the request (several keys).
        resumed: The session exists (its images and mask are the stored ones).
        labels: Label table of a new session's mask (``medm3.labels``).
        mask: A new session's mask, checked and named, with what the client is told
            (``(image, MaskInfo)``, set by the service; see :mod:`.mask`).
    """

    session_id: str
    question: str
    history: list[tuple[str, str]] = field(default_factory=list)
    images: dict[str, str] = field(default_factory=dict)
    generation: GenerationConfig | None = None
    agent: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    include_usage: bool = False
    model: str = ""
    owner: str | None = None
    resumed: bool = False
    labels: str | None = None
    mask: Any = None


def _decode_data_url(url: str, param: str) -> bytes:
    match = _DATA_URL_RE.match(url)
    if not match:
        raise bad_request("image data URLs must be base64 (data:image/png;base64,...)", param=param)
    try:
        return base64.b64decode(url[match.end() :], validate=False)
    except (binascii.Error, ValueError):
        raise bad_request("the image data URL is not valid base64", param=param) from None


def _file_id(value: str | None, param: str) -> str:
    if not value or not FILE_ID_RE.match(value):
        raise bad_request(f"invalid file id {str(value)[:80]!r}", param=param)
    return value


def _image_ref(part: Any, files: FileStore, param: str) -> str:
    """The file id an image/file part refers to (data URLs are stored first)."""
    if isinstance(part, FileContent):
        if part.file.file_data is not None:
            raise bad_request(
                "inline file_data is not accepted; upload with POST /v1/files and pass file_id",
                param=f"{param}.file.file_data",
            )
        return _file_id(part.file.file_id, f"{param}.file.file_id")
    url = part.image_url.url.strip()
    found = FILE_URL_RE.match(url)
    if found:
        return _file_id(found.group("id"), f"{param}.image_url.url")
    if url.lower().startswith("data:"):
        data = _decode_data_url(url, f"{param}.image_url.url")
        return files.ingest_bytes(data, "image", "chat").id
    raise bad_request(
        "image URLs must be data URLs or medm3://file/<file id>; the server fetches nothing",
        param=f"{param}.image_url.url",
    )


def _text_of(message: Any, images: list[str], files: FileStore, index: int) -> str:
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    texts: list[str] = []
    for j, part in enumerate(message.content):
        param = f"messages[{index}].content[{j}]"
        if isinstance(part, TextContent):
            texts.append(part.text)
        elif isinstance(part, ImageURLContent | FileContent):
            if message.role != "user":
                raise bad_request("images may only be sent in user messages", param=param)
            file_id = _image_ref(part, files, param)
            if file_id not in images:
                images.append(file_id)
    return "\n".join(t for t in texts if t)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def generation_config(req: ChatCompletionRequest, settings: ServeSettings) -> GenerationConfig:
    """Decoding settings of a request (``max_tokens`` is capped by the server's limit)."""
    from medm3.vlm.base import GenerationConfig

    wanted = req.max_completion_tokens or req.max_tokens or settings.max_new_tokens
    stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    return GenerationConfig(
        max_new_tokens=min(wanted, settings.max_new_tokens),
        min_new_tokens=1,
        temperature=req.temperature if req.temperature is not None else 0.0,
        top_p=req.top_p if req.top_p is not None else 1.0,
        seed=req.seed,
        stop=stop,
    )


def _agent_options(req: ChatCompletionRequest, settings: ServeSettings) -> dict[str, Any]:
    opts = req.medm3
    if opts is None:
        return {}
    out: dict[str, Any] = {}
    for key in ("plane", "slice_index", "window", "use_experts"):
        value = getattr(opts, key)
        if value is not None:
            out[key] = value
    if opts.window is not None:
        from medm3.errors import InputError
        from medm3.imaging.windowing import parse_window

        try:
            parse_window(opts.window)
        except InputError as exc:
            raise bad_request(exc.message, param="medm3.window") from None
    if opts.max_rounds is not None:
        out["max_rounds"] = min(opts.max_rounds, settings.max_rounds)
    if opts.experts is not None:
        from medm3.errors import InputError
        from medm3.experts.registry import get_expert_class

        try:
            out["experts"] = tuple(get_expert_class(n).name for n in opts.experts)
        except InputError as exc:
            raise bad_request(exc.message, param="medm3.experts") from None
    return out


def build_plan(
    req: ChatCompletionRequest,
    files: FileStore,
    settings: ServeSettings,
    *,
    session_exists: Any,
    session_images: Any,
) -> ChatPlan:
    """Check a chat request and turn it into a plan (stores data-URL images).

    Args:
        req: The request.
        files: The file store.
        settings: Server settings.
        session_exists: ``session id -> bool``.
        session_images: ``session id -> {name: file id}`` of a stored session.

    Raises:
        APIError: 400/404 with the parameter at fault.
    """
    if req.n is not None and req.n > 1:
        raise bad_request("only n=1 is supported", param="n")
    if req.session_id is not None and not OWNER_ID_RE.match(req.session_id):
        raise bad_request("session_id must be 1-64 letters, digits, '_' or '-'", param="session_id")
    turns, images = _turns(req, files)
    named = _named_images(req, images, files)
    labels = req.medm3.labels if req.medm3 is not None else None
    session_id = req.session_id or new_id("sess")
    exists = session_exists(session_id)
    if req.session_id is not None and not exists:  # ids are made here, never by clients
        raise not_found(
            f"no session with id {req.session_id}; omit session_id to start one",
            code="session_not_found",
            param="session_id",
        )
    history = [] if exists else turns[:-1]
    if history and history[0][0] != "user":
        raise bad_request("the conversation must start with a user message", param="messages")
    if "mask" in named or not exists:  # labels are fixed when the session is created
        named = mask.new_study(named, None if exists else labels)
    if exists and not mask.same_study(named, session_images(session_id)):
        raise bad_request(
            f"session {session_id} is about another study; start a new session for new images",
            param="session_id",
        )
    return ChatPlan(
        session_id=session_id,
        question=turns[-1][1].strip(),
        history=history,
        images=named,
        generation=generation_config(req, settings),
        agent=_agent_options(req, settings),
        stream=req.stream,
        include_usage=bool(req.stream_options and req.stream_options.include_usage),
        model=req.model,
        resumed=exists,
        labels=labels if not exists else None,
    )


def _turns(req: ChatCompletionRequest, files: FileStore) -> tuple[list[tuple[str, str]], list[str]]:
    """The ``(role, text)`` turns of a request (system turns dropped), and its image ids."""
    turns: list[tuple[str, str]] = []
    images: list[str] = []
    for i, message in enumerate(req.messages):
        if message.role in ("system", "developer"):
            continue  # the agent writes its own prompt (model cards, modality)
        if message.role == "tool":
            raise bad_request(
                "tool messages are not accepted: the server runs the experts itself",
                param=f"messages[{i}].role",
            )
        turns.append((message.role, _text_of(message, images, files, i)))
    for i, (_role, text) in enumerate(turns):
        if not _is_utf8(text):
            raise bad_request(
                "the message text is not valid Unicode (lone surrogate)", param=f"messages[{i}]"
            )
    if not turns or turns[-1][0] != "user" or not turns[-1][1].strip():
        raise bad_request("the last message must be a user message with text", param="messages")
    return turns, images


def _named_images(
    req: ChatCompletionRequest, images: list[str], files: FileStore
) -> dict[str, str]:
    """Input name -> file id (``medm3.images``, one unnamed image, ``medm3.mask``), checked."""
    named: dict[str, str] = {}
    if req.medm3 is not None and req.medm3.images:
        for name, file_id in req.medm3.images.items():
            named[name.lower()] = _file_id(file_id, f"medm3.images.{name}")
    elif len(images) == 1:
        named = {"image": images[0]}
    elif len(images) > 1:
        raise bad_request(
            "several images need names: pass them in medm3.images "
            "(e.g. t1ce, t1, t2, flair for BraTS)",
            param="messages",
        )
    if req.medm3 is not None and req.medm3.mask is not None:
        mask_id = _file_id(req.medm3.mask, "medm3.mask")
        if named.get("mask", mask_id) != mask_id:
            raise bad_request("medm3.mask and medm3.images.mask differ", param="medm3.mask")
        named["mask"] = mask_id
    for name, file_id in named.items():
        param = "medm3.mask" if name == "mask" else f"image {name}"
        files.record(file_id, param=param)  # 404 now rather than in the worker
    return named
