"""The one device and dtype selection of medm3 (experts, the ``vila`` and ``hf`` backends).

``auto`` picks CUDA, then Apple MPS, then the CPU; ``MEDM3_DEVICE`` sets the
default. Dtype names accept the usual aliases (``fp16``, ``bf16``, ``half`` ...).
torch is imported inside the functions.
"""

from __future__ import annotations

import os
from typing import Any

from medm3.errors import InputError

DTYPE_ALIASES = {
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
}


def _mps_available(torch: Any) -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def select_device(preference: str | Any | None = None) -> Any:
    """Choose the torch device.

    Args:
        preference: ``"auto"``/``None`` (also read from ``MEDM3_DEVICE``): CUDA,
            then MPS, then CPU; or ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``
            or a ``torch.device``.

    Returns:
        A ``torch.device``.

    Raises:
        InputError: CUDA or MPS was asked for but is not available, or the name is invalid.
    """
    import torch

    if isinstance(preference, torch.device):
        preference = str(preference)
    pref = (preference or os.environ.get("MEDM3_DEVICE") or "auto").strip().lower()
    if pref == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available(torch) else "cpu")
    try:
        device = torch.device(pref)
    except RuntimeError as exc:
        raise InputError(f"invalid device {preference!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {pref!r} requested but CUDA is not available on this machine")
    if device.type == "mps" and not _mps_available(torch):
        raise InputError(f"device {pref!r} requested but MPS is not available on this machine")
    return device


def parse_dtype(dtype: str | Any) -> Any:
    """The ``torch.dtype`` named by ``dtype`` (aliases accepted, ``torch.`` prefix allowed).

    Raises:
        InputError: Unknown dtype name.
    """
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    name = DTYPE_ALIASES.get(str(dtype).lower().removeprefix("torch."))
    if name is None:
        raise InputError(f"unknown dtype {dtype!r}; use auto, float16, bfloat16 or float32")
    return getattr(torch, name)


def cuda_half_dtype() -> Any:
    """bfloat16 where the GPU supports it, else float16."""
    import torch

    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def select_dtype(dtype: str | Any | None, device: Any, *, prefer_bf16: bool = False) -> Any:
    """Weights dtype: the one named, else a half type on CUDA and float32 elsewhere.

    Args:
        dtype: ``None``/``"auto"`` for the default, an alias or a ``torch.dtype``.
        device: The torch device (or ``"auto"`` for an accelerate device map,
            counted as CUDA when CUDA is available).
        prefer_bf16: On CUDA, default to bfloat16 where supported instead of
            float16 (the VILA-M3 reference runs float16).

    Raises:
        InputError: Unknown dtype name.
    """
    import torch

    if dtype is not None and str(dtype).lower() != "auto":
        return parse_dtype(dtype)
    on_cuda = (
        torch.cuda.is_available() if str(device) == "auto" else torch.device(device).type == "cuda"
    )
    if not on_cuda:
        return torch.float32
    return cuda_half_dtype() if prefer_bf16 else torch.float16


def autocast_dtype(device: Any) -> Any:
    """Mixed-precision dtype for inference: bf16/fp16 on CUDA, ``None`` (fp32) elsewhere."""
    if getattr(device, "type", str(device)) != "cuda":
        return None
    return cuda_half_dtype()
