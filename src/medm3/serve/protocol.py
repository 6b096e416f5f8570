"""Request and response models: the OpenAI schema plus the ``medm3`` extension.

Chat completions (``POST /v1/chat/completions``) follow the OpenAI schema.
Images may be given three ways in a user message's content list:

* ``{"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}}``
  (PNG/JPEG data URL; stored as a file so the conversation can be resumed);
* ``{"type": "image_url", "image_url": {"url": "medm3://file/<file id>"}}``
  (a scan uploaded with ``POST /v1/files``: NIfTI, DICOM, a DICOM zip ...);
* ``{"type": "file", "file": {"file_id": "<file id>"}}`` (OpenAI's file part).

Remote ``http(s)://`` and ``file://`` URLs are refused: the server never
fetches or opens anything a request names.

Extensions (ignored by other servers; with the ``openai`` client pass them in
``extra_body``):

* ``session_id`` (request) -- continue a conversation stored by the server
  (SQLite; survives restarts). When the session exists only the last user
  message of the request is used; the earlier turns come from the server.
  Without it a new session is created from the request's messages and its id
  is returned in ``medm3.session_id``.
* ``medm3`` (request, :class:`Medm3Options`) -- plane/slice/window of the view
  the model sees, experts offered, named inputs (BraTS sequences), and the
  user's label map (``mask``, an uploaded file) with its label table
  (``labels``) for the MEASURE expert, as ``m3 chat --mask --labels``.
* ``medm3`` (response, :class:`Medm3Result`) -- the session id, the final
  answer, the expert trace and the URLs of the overlays and other files
  written (``GET`` them with the same API key). In streams, chunks with an
  empty delta carry ``medm3.event`` for each expert call, and the last chunk
  carries the full ``medm3`` object.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from medm3.imaging.label_tables import TABLES

#: Sizes and counts a request may hold; checked while parsing, before any work.
MAX_MESSAGES = 512
MAX_PARTS = 64
MAX_EXPERTS = 32
MAX_IMAGES = 16
MAX_OPTIONS = 32
_Name = Annotated[str, StringConstraints(max_length=128)]
_Id = Annotated[str, StringConstraints(max_length=64)]
#: ``medm3.labels`` values: a built-in label table, or ``auto`` (the mask's header or fit).
LABEL_CHOICES = ("auto", *TABLES)
LabelTable = Literal[LABEL_CHOICES]  # type: ignore[valid-type]

# ------------------------------------------------------------------ requests


class _Lenient(BaseModel):
    """Unknown fields are accepted and ignored (clients send many optional ones)."""

    model_config = ConfigDict(extra="allow")


class TextContent(_Lenient):
    """A text part."""

    type: Literal["text"]
    text: str


class ImageURL(_Lenient):
    """``image_url`` payload: a data URL or ``medm3://file/<id>``."""

    url: str
    detail: str | None = None


class ImageURLContent(_Lenient):
    """An image part."""

    type: Literal["image_url"]
    image_url: ImageURL


class FileRef(_Lenient):
    """``file`` payload: an uploaded file id (``file_data`` is not accepted)."""

    file_id: str | None = Field(default=None, max_length=64)
    filename: str | None = Field(default=None, max_length=256)
    file_data: str | None = None


class FileContent(_Lenient):
    """A file part (OpenAI's ``{"type": "file", "file": {"file_id": ...}}``)."""

    type: Literal["file"]
    file: FileRef


ContentPart = Annotated[TextContent | ImageURLContent | FileContent, Field(discriminator="type")]


class ChatMessage(_Lenient):
    """One message of the conversation sent by the client."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | Annotated[list[ContentPart], Field(max_length=MAX_PARTS)] | None = None
    name: str | None = Field(default=None, max_length=128)


class StreamOptions(_Lenient):
    """``stream_options``."""

    include_usage: bool = False


class Medm3Options(_Lenient):
    """The ``medm3`` request extension.

    Attributes:
        plane: Plane of the view the model sees (volumes).
        slice_index: Slice of that view (default: the middle slice).
        window: Window preset or ``"W,L"`` of that view (default ``auto``).
        experts: Experts offered (registry or trigger names; default: the server's).
            Fixed when the session is created, like ``use_experts``.
        use_experts: False: answer without experts.
        max_rounds: Most expert calls for this question (<= the server's limit).
        images: Input name -> file id, for studies of several named images
            (``t1ce``, ``t1``, ``t2``, ``flair`` for BraTS).
        mask: File id of the user's label map on the image's grid (uploaded with
            ``POST /v1/files``): what MEASURE measures. Fixed when the session is created.
        labels: Names of the mask's labels: a built-in table (``totalseg-ct``,
            ``totalseg-mr``, ``vista3d``, ``brats``) or ``auto`` (default: the table
            embedded in the file's header, else the table its ids fit).
    """

    plane: Literal["axial", "coronal", "sagittal"] | None = None
    slice_index: int | None = Field(default=None, ge=0)
    window: str | None = Field(default=None, max_length=40)
    experts: list[_Name] | None = Field(default=None, max_length=MAX_EXPERTS)
    use_experts: bool | None = None
    max_rounds: int | None = Field(default=None, ge=0, le=10)
    images: dict[_Name, _Id] | None = Field(default=None, max_length=MAX_IMAGES)
    mask: _Id | None = Field(
        default=None,
        description="File id of your label map on the image's grid: what MEASURE measures "
        "(m3 chat --mask). Fixed when the session is created.",
    )
    labels: LabelTable | None = Field(
        default=None,
        description="Label table of the mask (m3 chat --labels); auto: from the file's "
        "header or the table its ids fit.",
    )


class ChatCompletionRequest(_Lenient):
    """``POST /v1/chat/completions`` body (OpenAI schema + ``session_id`` + ``medm3``)."""

    model: str = Field(max_length=256)
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    stop: _Name | Annotated[list[_Name], Field(max_length=8)] | None = None
    n: int | None = Field(default=None, ge=1)
    session_id: str | None = Field(default=None, max_length=64)
    medm3: Medm3Options | None = None


class ExpertRunRequest(_Lenient):
    """``POST /v1/experts/{name}/run`` body.

    Attributes:
        file_id: The image (fills the expert's first input).
        inputs: Input name -> file id (instead of ``file_id``; e.g. ``mask``).
        args: The expert's argument (``liver``, ``everything`` ...).
        plane: Plane of the overlays.
        slice_index: Slice of the overlays (default: the expert chooses).
        options: Expert-specific options (see each expert).
        labels: Label table of ``inputs.mask`` (as ``medm3.labels`` in chat).
    """

    file_id: _Id | None = None
    inputs: dict[_Name, _Id] | None = Field(default=None, max_length=MAX_IMAGES)
    args: str = Field(default="", max_length=200)
    plane: Literal["axial", "coronal", "sagittal"] = "axial"
    slice_index: int | None = Field(default=None, ge=0)
    options: dict[_Name, Any] = Field(default_factory=dict, max_length=MAX_OPTIONS)
    labels: LabelTable | None = Field(
        default=None,
        description="Label table of inputs.mask (m3 chat --labels); auto or absent: from the "
        "file's header or the table its ids fit.",
    )


def invalid_unicode(value: Any, where: str = "") -> str | None:
    """The location of the first string in ``value`` that cannot be encoded as UTF-8
    (a lone surrogate sent as ``\\ud800`` in JSON), or None when all are valid."""
    stack: list[tuple[str, Any]] = [(where, value)]
    while stack:
        loc, item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return loc or "body"
        elif isinstance(item, BaseModel):
            stack.append((loc, item.model_dump()))
        elif isinstance(item, dict):
            for key, val in item.items():
                stack.append((loc, key))
                stack.append((f"{loc}.{key}".strip("."), val))
        elif isinstance(item, list | tuple):
            stack.extend((f"{loc}[{i}]", val) for i, val in enumerate(item))
    return None


# ----------------------------------------------------------------- responses


class OutputFile(BaseModel):
    """A file written by an expert, downloadable from ``url``."""

    url: str
    name: str
    kind: str
    expert: str | None = None
    caption: str | None = None


class MaskInfo(BaseModel):
    """The session's label map (``medm3.mask``) and where its label names came from."""

    file_id: str
    labels: str
    note: str


class RunOutputs(BaseModel):
    """What a question or an expert run wrote: overlays, every file, and one zip of all."""

    overlays: list[OutputFile] = Field(default_factory=list)
    files: list[OutputFile] = Field(default_factory=list)
    archive_url: str


class Medm3Result(RunOutputs):
    """The ``medm3`` response extension of a chat completion."""

    session_id: str
    answer: str
    rounds: int
    round_limit_reached: bool
    trace: list[dict[str, Any]] = Field(default_factory=list)
    mask: MaskInfo | None = None


class AssistantMessage(BaseModel):
    """The assistant message of a choice."""

    role: Literal["assistant"] = "assistant"
    content: str
    refusal: None = None


class Choice(BaseModel):
    """One choice (there is always exactly one)."""

    index: int = 0
    message: AssistantMessage
    finish_reason: str = "stop"
    logprobs: None = None


class Usage(BaseModel):
    """Token counts summed over every generation of the question (0 when unknown)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class ChatCompletion(BaseModel):
    """A chat completion."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    medm3: Medm3Result


class Delta(BaseModel):
    """The delta of a streamed chunk."""

    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    """The choice of a streamed chunk."""

    index: int = 0
    delta: Delta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    """A streamed chunk (``chat.completion.chunk``)."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    medm3: dict[str, Any] | None = None


class ModelCard(BaseModel):
    """An entry of ``GET /v1/models``."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "medm3"


class ModelList(BaseModel):
    """``GET /v1/models``."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class FileObject(BaseModel):
    """An uploaded file, in the OpenAI ``file`` shape plus ``medm3`` facts.

    ``medm3`` holds ``format`` (``nifti``, ``dicom``, ``dicom_zip``, ``png``,
    ``jpeg``), ``sha256``, ``deidentified`` (and ``deid``: files, warnings,
    ``burned_in_risk``), and the image's ``modality``, ``kind`` (``volume`` or
    ``2d``), ``shape``, ``spacing_mm`` and, for volumes, ``slices`` per plane.
    """

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["processed"] = "processed"
    medm3: dict[str, Any] = Field(default_factory=dict)


class FileList(BaseModel):
    """``GET /v1/files``."""

    object: Literal["list"] = "list"
    data: list[FileObject]


class FileDeleted(BaseModel):
    """``DELETE /v1/files/{id}``."""

    id: str
    object: Literal["file"] = "file"
    deleted: bool = True


class ExpertList(BaseModel):
    """``GET /v1/experts``: each entry is ``Expert.describe()`` plus ``object``."""

    object: Literal["list"] = "list"
    data: list[dict[str, Any]]


class ExpertRunResponse(RunOutputs):
    """``POST /v1/experts/{name}/run``."""

    id: str
    object: Literal["expert.run"] = "expert.run"
    created: int
    expert: str
    result: dict[str, Any]


class SessionMessage(BaseModel):
    """A visible turn of a stored session."""

    role: str
    content: str
    created_at: int
    files: list[OutputFile] = Field(default_factory=list)
    trace: list[dict[str, Any]] = Field(default_factory=list)


class SessionObject(BaseModel):
    """``GET /v1/sessions/{id}``."""

    id: str
    object: Literal["session"] = "session"
    created_at: int
    updated_at: int
    images: dict[str, str]
    labels: str | None = None
    messages: list[SessionMessage]
    archive_url: str


class Health(BaseModel):
    """``GET /health``."""

    status: Literal["ok", "loading", "error"]
    model: str
    backend: str
    running: int
    waiting: int
    capacity: int
    uptime_s: float
