"""HTTP errors in the OpenAI shape: ``{"error": {"message", "type", "param", "code"}}``.

Routes and the service raise :class:`APIError` (or a subclass); the app turns
it, and every :class:`~medm3.errors.MedM3Error`, into that JSON body with the
matching status code.
"""

from __future__ import annotations

from typing import Any

from medm3.errors import InputError, MedM3Error, MissingDependencyError


class APIError(Exception):
    """An error answered to the client.

    Args:
        status: HTTP status code.
        message: What went wrong, for the user.
        type: OpenAI error type (``invalid_request_error``, ``authentication_error``,
            ``rate_limit_error``, ``server_error`` ...).
        code: Machine-readable code (``queue_full``, ``file_not_found`` ...).
        param: The request parameter at fault, if any.
        headers: Extra response headers (``Retry-After`` ...).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body."""
        return error_body(self.message, self.type, self.code, self.param)


def error_body(
    message: str, type: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """An OpenAI-style error object (text that is not valid Unicode is escaped)."""
    return {
        "error": {"message": _clean(message), "type": type, "param": _clean(param), "code": code}
    }


def _clean(text: str | None) -> str | None:
    """``text`` with lone surrogates escaped (they cannot be encoded as UTF-8)."""
    if text is None:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> APIError:
    """HTTP 400 ``invalid_request_error``."""
    return APIError(400, message, param=param, code=code)


def not_found(message: str, *, code: str = "not_found", param: str | None = None) -> APIError:
    """HTTP 404 ``invalid_request_error``."""
    return APIError(404, message, code=code, param=param)


class QueueFullError(APIError):
    """The model queue is full (HTTP 429 with ``Retry-After``)."""

    def __init__(self, capacity: int, retry_after: int = 2) -> None:
        super().__init__(
            429,
            f"the server is busy: {capacity} request(s) are already running or waiting; "
            "retry later",
            type="rate_limit_error",
            code="queue_full",
            headers={"Retry-After": str(retry_after)},
        )


class RequestTimeoutError(APIError):
    """The request did not finish within the server's time limit (HTTP 504)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            504,
            f"the request did not finish within {seconds:g} s",
            type="timeout_error",
            code="request_timeout",
        )


class PayloadTooLargeError(APIError):
    """A body or upload is larger than the configured cap (HTTP 413)."""

    def __init__(self, limit_bytes: int, param: str | None = None) -> None:
        super().__init__(
            413,
            f"the request is larger than the limit of {limit_bytes / 1048576:g} MiB",
            code="payload_too_large",
            param=param,
        )


class UnsupportedMediaError(APIError):
    """An upload of a type the server does not accept (HTTP 415)."""

    def __init__(self, message: str, param: str | None = "file") -> None:
        super().__init__(415, message, code="unsupported_file_type", param=param)


def from_medm3_error(exc: MedM3Error) -> APIError:
    """The HTTP error of a package error: bad input -> 400 (413 beyond a read limit),
    missing expert weights -> 503 (without server paths), a missing extra -> 501."""
    from medm3.experts.catalogue import WeightsNotFoundError

    if isinstance(exc, WeightsNotFoundError):
        return APIError(
            503,
            "an expert's weights are not installed on this server; the operator can install "
            "them with `m3 experts download NAME`",
            type="server_error",
            code="expert_weights_missing",
        )
    if isinstance(exc, InputError) and _is_limit_error(exc):
        return APIError(413, exc.message, code="image_too_large")
    if isinstance(exc, InputError):
        return APIError(400, exc.message if exc.path is None else str(exc), code="invalid_input")
    if isinstance(exc, MissingDependencyError):
        return APIError(501, str(exc), type="server_error", code="missing_dependency")
    return APIError(500, str(exc), type="server_error", code="model_error")


def _is_limit_error(exc: InputError) -> bool:
    """Whether ``exc`` reports a read limit (decompression bomb, oversized image)."""
    name = type(exc).__name__
    text = exc.message.lower()
    return name.endswith("LimitError") or any(w in text for w in ("limit", "bomb", "medm3_max_"))
