"""Settings of one ``m3 serve`` process (no FastAPI import here)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medm3.errors import InputError
from medm3.utils.paths import DATA_DIR_ENV  # the data folder when --data-dir is not given

if TYPE_CHECKING:  # pragma: no cover
    from medm3.vlm.base import VLMBackend

#: Environment variable holding API keys (comma-separated) when ``--api-key`` is not given.
API_KEY_ENV = "MEDM3_API_KEY"


def default_data_dir() -> Path:
    """Default data folder: ``$MEDM3_DATA_DIR``, else ``<platform user data dir>/medm3/serve``.

    (``~/.local/share/medm3/serve`` on Linux, ``~/Library/Application Support/medm3/serve``
    on macOS, ``%LOCALAPPDATA%\\medm3\\serve`` on Windows; never the current folder.)
    """
    from medm3.utils.paths import data_root

    root = data_root()
    return root if os.environ.get(DATA_DIR_ENV, "").strip() else root / "serve"


#: Kept for callers that imported it: the default folder at import time.
DEFAULT_DATA_DIR = default_data_dir()


@dataclass
class ServeSettings:
    """Everything a server instance needs; :func:`medm3.serve.app.create_app` takes one.

    Attributes:
        backend: VLM backend name (``vila``, ``hf``, ``openai``, ``mock`` or a plugin).
        model: Model id or folder (``None``: the backend's default).
        backend_options: Extra constructor options of the backend (device, base_url ...).
        vlm: A ready backend instance to serve instead of loading ``backend``/``model``
            (tests, embedding in another program).
        host: Interface the server binds to; anything but loopback needs ``api_keys``.
        port: TCP port.
        api_keys: Accepted API keys (``Authorization: Bearer KEY`` or ``X-API-Key``);
            empty: no authentication (allowed on loopback only).
        data_dir: Folder of the database, uploads and outputs (created when missing).
        max_upload_mb: Largest accepted upload (``POST /v1/files``, the web UI), in MiB.
        max_json_mb: Largest accepted body of every other request, in MiB (checked
            before the body is read, like the API key).
        max_image_mb: Largest image an upload may decode to, in MiB of samples
            (checked from the header before any pixel is read; bombs get HTTP 413).
        allowed_hosts: Host names accepted in the ``Host`` header (``*``: any).
            ``None``: loopback names when ``host`` is loopback (DNS-rebinding
            protection), any otherwise (API keys are required there).
        deid: De-identify DICOM uploads on arrival (the original bytes are not kept).
        deid_key: Key of the de-identification pseudonyms (``None``: ``$MEDM3_DEID_KEY``,
            else a random key per upload).
        ui: Mount the Gradio web UI on ``/ui``.
        workers: Requests executed at the same time on the one model instance
            (1 serialises them; more only makes sense for thread-safe backends
            such as ``openai``).
        batch_size: Greedy questions of different sessions batched into one
            ``generate_batch`` call (1: no batching); the agent loops then run
            on ``max(workers, batch_size)`` threads (see :mod:`.batching`).
        batch_wait_ms: Longest a question waits for others to batch with.
        max_queue: Requests allowed to wait behind the running ones; beyond that
            requests are refused with HTTP 429.
        request_timeout_s: Longest a request may wait and run, in seconds (HTTP 504 after).
        session_cache: Conversations kept in memory (older ones are reloaded from
            the database when they are used again).
        experts: Experts offered to the model (``None``: all registered).
        use_experts: Offer experts at all.
        max_rounds: Most expert calls per question.
        protocol: Conversation protocol, ``released`` or ``medm3`` (``None``: by
            backend, see :mod:`medm3.agent.protocol`).
        expert_device: Device of the experts (``None``: automatic).
        max_new_tokens: Default and upper bound of ``max_tokens``.
        model_name: Name reported by ``GET /v1/models`` (default: the model id).
        dicomweb: DICOMweb root (``dicomweb+https://HOST/ROOT``) the web UI browses and
            stores results to (``None``: no PACS panel).
        weights: Expert name -> local weights folder used instead of the cache
            (``--weights NAME=DIR``).
        mock_script: Replies of the ``mock`` backend (a file, see
            :func:`medm3.vlm.mock.load_script`; ``None``: it echoes questions).
    """

    backend: str = "vila"
    model: str | None = None
    backend_options: dict[str, Any] = field(default_factory=dict)
    vlm: VLMBackend | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: tuple[str, ...] = ()
    data_dir: Path = field(default_factory=default_data_dir)
    max_upload_mb: float = 1024.0
    max_json_mb: float = 32.0
    max_image_mb: float = 1024.0
    allowed_hosts: tuple[str, ...] | None = None
    deid: bool = True
    deid_key: str | None = None
    ui: bool = True
    workers: int = 1
    batch_size: int = 1
    batch_wait_ms: float = 10.0
    max_queue: int = 16
    request_timeout_s: float = 600.0
    session_cache: int = 8
    experts: tuple[str, ...] | None = None
    use_experts: bool = True
    max_rounds: int = 3
    protocol: str | None = None
    expert_device: str | None = None
    max_new_tokens: int = 1024
    model_name: str | None = None
    dicomweb: str | None = None
    weights: dict[str, Path] = field(default_factory=dict)
    mock_script: Path | None = None

    @property
    def max_upload_bytes(self) -> int:
        """The upload cap in bytes."""
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_json_bytes(self) -> int:
        """The cap of non-upload request bodies in bytes."""
        return int(self.max_json_mb * 1024 * 1024)

    @property
    def max_image_bytes(self) -> int:
        """The decoded-image cap in bytes."""
        return int(self.max_image_mb * 1024 * 1024)

    def host_allow_list(self) -> tuple[str, ...]:
        """The accepted ``Host`` names (lower case; ``("*",)``: any)."""
        from medm3.serve.auth import LOOPBACK_NAMES, is_loopback

        if self.allowed_hosts is not None:
            return tuple(h.strip().lower() for h in self.allowed_hosts if h.strip())
        if is_loopback(self.host):
            return LOOPBACK_NAMES
        return ("*",)

    def validate(self) -> None:
        """Check the settings; refuse an open bind without API keys.

        Raises:
            InputError: A value is out of range, or ``host`` is not a loopback
                address and no API key is configured.
        """
        from medm3.serve.auth import check_bind

        if self.workers < 1:
            raise InputError(f"workers must be at least 1, not {self.workers}")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be at least 1, not {self.batch_size}")
        if self.batch_wait_ms < 0:
            raise InputError(f"batch_wait_ms must be 0 or more, not {self.batch_wait_ms}")
        if self.max_queue < 0:
            raise InputError(f"max_queue must be 0 or more, not {self.max_queue}")
        for name in ("max_upload_mb", "max_json_mb", "max_image_mb"):
            if not getattr(self, name) > 0:
                raise InputError(f"{name} must be > 0, not {getattr(self, name)}")
        if self.allowed_hosts is not None and not self.host_allow_list():
            raise InputError("allowed_hosts is empty: give host names, or '*' for any")
        if not self.request_timeout_s > 0:
            raise InputError(f"request_timeout_s must be > 0, not {self.request_timeout_s}")
        if self.session_cache < 1:
            raise InputError(f"session_cache must be at least 1, not {self.session_cache}")
        if any(not k or k != k.strip() for k in self.api_keys):
            raise InputError("API keys must be non-empty and without surrounding spaces")
        if self.protocol is not None:
            from medm3.agent.protocol import get_protocol

            self.protocol = get_protocol(self.protocol).name
        check_bind(self.host, self.api_keys)
        if self.dicomweb:
            from medm3.dicomweb.url import parse_reference

            parse_reference(self.dicomweb, need_study=False)


def keys_from_env() -> tuple[str, ...]:
    """API keys listed in ``$MEDM3_API_KEY`` (comma-separated; empty: none)."""
    raw = os.environ.get(API_KEY_ENV, "")
    return tuple(k.strip() for k in raw.split(",") if k.strip())
