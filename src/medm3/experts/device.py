"""Device and precision selection for expert networks."""

from __future__ import annotations

import os
from typing import Any

from medm3.errors import InputError


def select_device(preference: str | None = None) -> Any:
    """Choose the torch device: CUDA when available, else CPU.

    Args:
        preference: ``"auto"``/``None`` (also read from ``MEDM3_DEVICE``),
            ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Returns:
        A ``torch.device``.

    Raises:
        InputError: CUDA was asked for but is not available, or the name is invalid.
    """
    import torch

    pref = (preference or os.environ.get("MEDM3_DEVICE") or "auto").strip().lower()
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(pref)
    except RuntimeError as exc:
        raise InputError(f"invalid device {preference!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {pref!r} requested but CUDA is not available on this machine")
    return device


def autocast_dtype(device: Any) -> Any:
    """Mixed-precision dtype for inference: bf16/fp16 on CUDA, ``None`` (fp32) on CPU."""
    import torch

    if getattr(device, "type", str(device)) != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
