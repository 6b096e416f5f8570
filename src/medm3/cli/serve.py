"""`m3 serve`: run VILA-M3 as an OpenAI-compatible HTTP service with a web UI.

The model is loaded before the server starts listening, so a bad model or
backend is reported as one error line. Binding to anything but a loopback
address requires an API key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from medm3.cli.options import (
    agent_options,
    allow_gaps_option,
    mock_script_option,
    model_options,
    weights_option,
)
from medm3.serve.settings import API_KEY_ENV, DATA_DIR_ENV


def _bounded(
    flag: str, kind: click.ParamType, default: float, help_text: str, name: str | None = None
) -> Any:
    """A numeric serving limit: ``flag`` of type ``kind`` (a range), default shown."""
    names = [flag] if name is None else [flag, name]
    return click.option(*names, type=kind, default=default, show_default=True, help=help_text)


def _mib_limit(flag: str, default: float, what: str) -> Any:
    """A size limit option in MiB (at least 1 KiB)."""
    return _bounded(flag, click.FloatRange(min=0.001), default, f"{what} In MiB.")


@click.command("serve")
@model_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option(
    "--api-key",
    "api_keys",
    multiple=True,
    help=f"Accepted API key (repeatable; default: ${API_KEY_ENV}, comma-separated). "
    "Required unless --host is a loopback address.",
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder of uploads, outputs and the session database "
    f"(default: ${DATA_DIR_ENV}, else the platform's user data folder, medm3/serve).",
)
@weights_option
@mock_script_option
@_mib_limit("--max-upload-mb", 1024.0, "Largest upload (HTTP 413 beyond).")
@_mib_limit("--max-json-mb", 32.0, "Largest body of other requests (checked before it is read).")
@_mib_limit(
    "--max-image-mb",
    1024.0,
    "Largest image an upload may decode to (zip/gzip/NIfTI bombs get HTTP 413).",
)
@click.option(
    "--allowed-hosts",
    default=None,
    help="Comma-separated Host names accepted ('*': any; '*.example.org': a domain). "
    "Default: localhost, 127.0.0.1, ::1 on a loopback bind, any otherwise.",
)
@click.option(
    "--deid/--no-deid",
    default=True,
    show_default=True,
    help="De-identify DICOM uploads on arrival (PS3.15 basic profile).",
)
@agent_options
@click.option("--no-ui", is_flag=True, help="Serve the API only (no Gradio web UI on /ui).")
@_bounded(
    "--max-queue",
    click.IntRange(0, 10000),
    16,
    "Requests that may wait for the model; more are refused with HTTP 429.",
)
@_bounded("--workers", click.IntRange(1, 64), 1, "Requests run at once on the one model instance.")
@_bounded(
    "--batch-size",
    click.IntRange(1, 256),
    1,
    "Batch greedy questions of different sessions into one generate call (1: off).",
)
@_bounded(
    "--batch-wait-ms",
    click.FloatRange(min=0),
    10.0,
    "Longest a question waits for others to batch with.",
)
@_bounded(
    "--timeout",
    click.FloatRange(min=1),
    600.0,
    "Request time limit in seconds (HTTP 504 after).",
    name="timeout_s",
)
@click.option(
    "--dicomweb",
    default=None,
    metavar="URL",
    help="PACS for the web UI: dicomweb+https://HOST/dicom-web (browse, open, store results).",
)
@click.option("--log-level", default="info", show_default=True)
@allow_gaps_option
def serve(
    model: str | None,
    backend: str,
    host: str,
    port: int,
    api_keys: tuple[str, ...],
    data_dir: Path | None,
    weights: tuple[str, ...],
    mock_script: Path | None,
    max_upload_mb: float,
    max_json_mb: float,
    max_image_mb: float,
    allowed_hosts: str | None,
    deid: bool,
    no_ui: bool,
    device: str | None,
    expert_device: str | None,
    base_url: str | None,
    max_queue: int,
    workers: int,
    batch_size: int,
    batch_wait_ms: float,
    timeout_s: float,
    max_rounds: int,
    protocol: str | None,
    max_new_tokens: int,
    dicomweb: str | None,
    log_level: str,
) -> None:
    """Serve the model over HTTP: OpenAI-compatible API on /v1, web UI on /ui.

    \b
    Examples:
      m3 serve                                   # VILA-M3 on http://127.0.0.1:8000
      m3 serve --backend mock                    # no model: echoes questions
      m3 serve --host 0.0.0.0 --api-key "$KEY"   # reachable from other machines
    """
    from medm3.cli.backends import check_mock_script
    from medm3.cli.options import parse_weights
    from medm3.serve.settings import ServeSettings, default_data_dir, keys_from_env

    check_mock_script(backend, mock_script)  # a bad file is reported before anything starts
    data_dir = data_dir or default_data_dir()
    settings = ServeSettings(
        backend=backend,
        model=model,
        host=host,
        port=port,
        api_keys=tuple(api_keys) or keys_from_env(),
        data_dir=data_dir,
        max_upload_mb=max_upload_mb,
        max_json_mb=max_json_mb,
        max_image_mb=max_image_mb,
        allowed_hosts=None if allowed_hosts is None else tuple(allowed_hosts.split(",")),
        deid=deid,
        ui=not no_ui,
        workers=workers,
        batch_size=batch_size,
        batch_wait_ms=batch_wait_ms,
        max_queue=max_queue,
        request_timeout_s=timeout_s,
        max_rounds=max_rounds,
        protocol=protocol,
        expert_device=expert_device,
        max_new_tokens=max_new_tokens,
        dicomweb=dicomweb,
        weights=parse_weights(weights),
        mock_script=mock_script,
    )
    settings.validate()  # refuse an open bind before loading anything
    check_data_dir(data_dir)
    uvicorn = _require_uvicorn()
    settings.vlm = _load_vlm(settings, device=device, base_url=base_url)

    from medm3.serve.app import create_app

    app = create_app(settings)
    _announce(settings)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=10)


def _require_uvicorn() -> Any:
    """The uvicorn module (the ``serve`` extra), checked before the model loads."""
    try:
        import uvicorn
    except ImportError:
        from medm3.errors import MissingDependencyError

        raise MissingDependencyError("uvicorn", "serve", "m3 serve") from None
    return uvicorn


def _announce(settings: Any) -> None:
    """Say on stderr what is served where: model, API, data folder, web UI."""
    host = settings.host
    where = f"http://{'[' + host + ']' if ':' in host else host}:{settings.port}"
    model = f"{settings.vlm.model_id} ({settings.backend})"
    click.echo(f"m3 serve: model {model}; API {where}/v1", err=True)
    click.echo(f"m3 serve: data folder {settings.data_dir}", err=True)
    if settings.ui:
        click.echo(f"m3 serve: web UI {where}/ui", err=True)


def check_data_dir(data_dir: Path) -> None:
    """Make sure the data folder can be created and written (before loading the model).

    Raises:
        InputError: It cannot (read-only file system, no permission, a file in the way).
    """
    import os
    import tempfile

    from medm3.errors import InputError

    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".m3-write-test-", dir=data_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise InputError(
            f"the data folder cannot be written ({reason}); pass --data-dir with a writable folder",
            data_dir,
        ) from None


def _load_vlm(settings: Any, *, device: str | None, base_url: str | None) -> Any:
    """The server's VLM, built from its settings as ``m3 chat`` builds its own."""
    from medm3.cli.backends import build_vlm

    return build_vlm(
        settings.backend,
        settings.model,
        mock_script=settings.mock_script,
        announce=lambda line: click.echo(f"m3 serve: {line}", err=True),
        device=device,
        base_url=base_url,
    )
