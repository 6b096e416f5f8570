"""Loading of the ``hf`` backend: folder or Hub id, device and dtype, clear load errors.

:func:`load_hf_model` resolves the model argument (a local folder, else a Hub
id; :func:`medm3.utils.paths.looks_like_local_path` tells them apart), loads
the processor and the ``AutoModelForImageTextToText`` model on the selected
device and dtype, and checks that the processor has a tokenizer and a chat
template. Every failure is one :class:`~medm3.errors.MedM3Error` line that says
what to do (download command, offline mode, ``trust_remote_code``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medm3.errors import InputError, MedM3Error, MissingDependencyError
from medm3.utils.device import select_device, select_dtype
from medm3.utils.paths import looks_like_local_path

__all__ = ["LoadedModel", "load_hf_model"]


@dataclass
class LoadedModel:
    """What :func:`load_hf_model` gives the backend.

    Attributes:
        processor: The model's processor (tokenizer padding on the left, pad token set).
        model: The model in eval mode.
        device: The device string (``auto`` when sharded by accelerate).
        dtype: The dtype of the weights.
    """

    processor: Any
    model: Any
    device: str
    dtype: Any


def load_hf_model(
    model_id: str,
    *,
    device: str | None = None,
    dtype: str | Any | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load an image-text-to-text model and its processor.

    Args:
        model_id: Hub id or local folder.
        device: As :class:`medm3.vlm.hf.HFBackend` (``auto`` shards with accelerate).
        dtype: As :class:`medm3.vlm.hf.HFBackend`.
        trust_remote_code: Allow the model's own Python code.

    Returns:
        The processor, the model, the device and the weights' dtype.

    Raises:
        MissingDependencyError: torch or transformers is not installed.
        InputError: A local folder that does not exist, a file, or a bad dtype.
        MedM3Error: The model cannot be loaded, or has no tokenizer or chat template.
    """
    transformers = _import_transformers()
    source = resolve_source(model_id)
    device = device if device == "auto" else str(select_device(device))
    torch_dtype = (
        "auto" if str(dtype).lower() == "auto" else select_dtype(dtype, device, prefer_bf16=True)
    )
    load_kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code, "dtype": torch_dtype}
    if device == "auto":
        load_kwargs["device_map"] = "auto"
    try:
        processor = transformers.AutoProcessor.from_pretrained(
            source, trust_remote_code=trust_remote_code
        )
        model = transformers.AutoModelForImageTextToText.from_pretrained(source, **load_kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise MedM3Error(load_error(model_id, source, exc)) from None
    if device != "auto":
        model = model.to(device)
    _check_processor(model_id, processor)
    return LoadedModel(processor, model.eval(), device, next(model.parameters()).dtype)


def _import_transformers() -> Any:
    try:
        import torch  # noqa: F401 - transformers needs it for the models
        import transformers
    except ImportError as exc:  # pragma: no cover - depends on the environment
        package = "torch" if "torch" in str(exc) else "transformers"
        raise MissingDependencyError(package, "hf", "The 'hf' backend") from None
    return transformers


def _check_processor(model_id: str, processor: Any) -> None:
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None:
        raise MedM3Error(f"model '{model_id}': its processor has no tokenizer")
    template = getattr(processor, "chat_template", None) or getattr(
        tokenizer, "chat_template", None
    )
    if not template:
        raise MedM3Error(
            f"model '{model_id}' has no chat template (chat_template.jinja); the 'hf' backend "
            "needs an instruction-tuned model whose processor defines one"
        )
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def resolve_source(model_id: str) -> str:
    """The local folder of ``model_id`` when it is one, else the Hub id itself.

    Raises:
        InputError: ``model_id`` is a file, or looks like a path that does not exist.
    """
    path = Path(model_id).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists():
        raise InputError("is a file; pass the model folder (with config.json)", path)
    if looks_like_local_path(model_id):
        raise InputError("model folder not found", path)
    return model_id


def load_error(model_id: str, source: str, exc: Exception) -> str:
    """The one-line message for a model that transformers could not load."""
    detail = " ".join(str(exc).split())[:300]
    if source != model_id or Path(source).is_dir():
        return (
            f"cannot load the model folder '{source}' with transformers "
            f"(AutoModelForImageTextToText + AutoProcessor): {detail}"
        )
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.environ.get(
        "TRANSFORMERS_OFFLINE", ""
    ) not in ("", "0")
    local_name = model_id.rsplit("/", 1)[-1]
    hint = (
        f"Download it where there is internet access with "
        f"`hf download {model_id} --local-dir ./{local_name}` "
        f"(gated models need `hf auth login` first), then pass the folder "
        f"(e.g. --model ./{local_name})."
    )
    if isinstance(exc, ValueError) and "Unrecognized" in str(exc) and "connect" not in str(exc):
        return (
            f"'{model_id}' is not an image-text-to-text model that transformers can load "
            f"with AutoModelForImageTextToText/AutoProcessor (try trust_remote_code=True "
            f"for custom code, or the 'vila' backend for VILA-M3): {detail}"
        )
    where = " (offline mode: HF_HUB_OFFLINE is set)" if offline else ""
    return (
        f"cannot load Hugging Face model '{model_id}': not in the local cache and not "
        f"downloadable{where}. {hint} Details: {detail}"
    )
