"""How the commands that run a VLM (``chat``, ``serve``, ``eval``) build it, once.

:func:`build_vlm` resolves the model id (``mock`` for the mock backend, else
the backend's default), keeps only the options the backend's constructor
takes, and gives the mock backend its script (``--mock-script``) or the echo
answer of :func:`mock_echo`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medm3.errors import InputError


def mock_echo(messages: list[Any]) -> str:
    """Answer of ``--backend mock`` without a script (:func:`medm3.vlm.mock.echo_reply`)."""
    from medm3.vlm.mock import echo_reply

    return echo_reply(messages)


def backend_options(cls: type, **candidates: Any) -> dict[str, Any]:
    """Keep the options the backend's constructor accepts and that were given.

    Args:
        cls: The backend class.
        **candidates: Option name -> value (``None``: not given).

    Returns:
        The given options its ``__init__`` names.
    """
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in candidates.items() if v is not None and k in params}


def model_id_for(backend: str, model: str | None) -> str:
    """The model to load: ``model``, else ``mock`` (mock backend) or the backend's default."""
    from medm3.vlm.registry import default_model

    return model or ("mock" if backend == "mock" else default_model(backend))


def check_mock_script(backend: str, mock_script: Path | None) -> None:
    """``--mock-script`` needs ``--backend mock``; a bad script is reported before any work.

    Raises:
        InputError: Either problem.
    """
    if mock_script is None:
        return
    if backend != "mock":
        raise InputError("--mock-script needs --backend mock")
    from medm3.vlm.mock import load_script

    load_script(mock_script)


def build_vlm(
    backend: str,
    model: str | None,
    *,
    mock_script: Path | None = None,
    announce: Callable[[str], None] | None = None,
    **options: Any,
) -> Any:
    """The VLM backend instance ``chat`` and ``serve`` talk to.

    Args:
        backend: Backend name (``vila``, ``hf``, ``openai``, ``mock`` or a plugin).
        model: Model id or folder (``None``: see :func:`model_id_for`).
        mock_script: The mock's scripted replies (``--mock-script``); without
            one the mock echoes (:func:`mock_echo`).
        announce: Called with a line before a real model is loaded.
        **options: Constructor options (device, dtype, template, base_url,
            api_key ...); ``None`` values and options the backend does not
            take are dropped.

    Returns:
        The backend.

    Raises:
        InputError: Unknown backend, no default model, or ``--mock-script``
            with another backend.
    """
    from medm3.vlm.registry import BACKENDS

    check_mock_script(backend, mock_script)
    cls = BACKENDS.get(backend)
    model_id = model_id_for(backend, model)
    if backend == "mock":
        if mock_script is not None:
            return cls(model_id, script_file=mock_script)
        return cls(model_id, script=mock_echo)
    if announce is not None:
        announce(f"loading {model_id} ...")
    return cls(model_id, **backend_options(cls, **options))
