"""Resolve a VILA-M3 checkpoint (local folder or Hub id) and load it.

A local folder is used as is. Anything else that looks like ``owner/name`` is
fetched with ``huggingface_hub.snapshot_download`` (its progress bar shows);
when offline or missing, one :class:`~medm3.errors.MedM3Error` says how to
download it by hand and how to pass a folder instead.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from medm3.errors import InputError, MedM3Error, MissingDependencyError
from medm3.utils.paths import looks_like_local_path

logger = logging.getLogger(__name__)

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_checkpoint(
    model: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    revision: str | None = None,
) -> Path:
    """Local folder of a checkpoint given a folder or a Hub id.

    Args:
        model: A local folder, or a Hub id such as ``MONAI/Llama3-VILA-M3-8B``.
        cache_dir: Hugging Face cache folder (default: the hub's own).
        revision: Hub revision (branch, tag or commit).

    Returns:
        The checkpoint folder.

    Raises:
        InputError: A path that does not exist, or a name that is neither.
        MedM3Error: The Hub download failed (offline, missing repo, no access).
    """
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise InputError("expected a VILA-M3 checkpoint folder, got a file", path)
    if looks_like_local_path(text) or not HUB_ID.match(text):
        raise InputError(
            "VILA-M3 checkpoint folder not found (pass a local folder or a Hub id such as "
            "MONAI/Llama3-VILA-M3-8B)",
            path,
        )
    return _download(text, cache_dir=cache_dir, revision=revision)


def _download(repo_id: str, *, cache_dir: Any, revision: str | None) -> Path:
    try:
        from huggingface_hub import constants, errors, snapshot_download
    except ImportError:  # pragma: no cover - depends on the environment
        raise MissingDependencyError("huggingface_hub", "vlm", "Downloading VILA-M3") from None
    where = os.fspath(cache_dir) if cache_dir else constants.HF_HUB_CACHE
    try:
        folder = snapshot_download(repo_id, revision=revision, cache_dir=cache_dir)
    except Exception as exc:  # offline, missing repo, gated, network errors
        if isinstance(exc, errors.GatedRepoError):
            reason = "access to the repository is gated (accept its terms, then `hf auth login`)"
        elif isinstance(exc, errors.RepositoryNotFoundError):
            reason = "no such repository on the Hub (or it needs `hf auth login`)"
        elif isinstance(exc, errors.RevisionNotFoundError):
            reason = f"no revision {revision!r} in the repository"
        elif constants.HF_HUB_OFFLINE:
            reason = f"it is not in the cache {where} and HF_HUB_OFFLINE is set"
        else:
            first = (str(exc).strip().splitlines() or [""])[0][:160]
            reason = f"it is not in the cache {where} and the download failed ({first})"
        raise MedM3Error(
            f"cannot load the VILA-M3 model {repo_id!r}: {reason}. Download it with "
            f"`huggingface-cli download {repo_id}`, or pass a local folder with --model DIR",
            details=[
                f"or: hf download {repo_id} --local-dir DIR, then --model DIR",
                f"no local folder named {repo_id!r} exists here",
            ],
        ) from None
    return Path(folder)


def load_model(
    root: Path,
    *,
    device: Any,
    dtype: Any,
    template: str | None = None,
) -> tuple[Any, Any, str]:
    """Load the composed model and the tokenizer from a checkpoint folder.

    Args:
        root: Checkpoint folder (see :mod:`medm3.vlm.vila.config` for the layout).
        device: Torch device.
        dtype: Torch dtype of all weights.
        template: Conversation template to force (``None``: detect).

    Returns:
        ``(VilaModel, tokenizer, template name)``.

    Raises:
        InputError: Bad layout or unsupported checkpoint settings.
    """
    import torch
    from transformers import LlamaForCausalLM, SiglipImageProcessorPil, SiglipVisionModel

    from medm3.vlm.vila.config import read_config
    from medm3.vlm.vila.model import VilaModel
    from medm3.vlm.vila.projector import MlpDownsampleProjector
    from medm3.vlm.vila.tokenize import load_tokenizer

    config = read_config(root)
    tokenizer, template_name = load_tokenizer(config.llm_dir, template)
    device_map = str(device) if torch.device(device).type == "cuda" else None
    try:
        llm = LlamaForCausalLM.from_pretrained(
            str(config.llm_dir), dtype=dtype, device_map=device_map
        )
        vision = SiglipVisionModel.from_pretrained(
            str(config.vision_dir), dtype=dtype, device_map=device_map
        )
        processor = SiglipImageProcessorPil.from_pretrained(str(config.vision_dir))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load the checkpoint: {exc}".splitlines()[0], root) from None
    if llm.config.hidden_size != config.hidden_size:
        raise InputError(
            f"llm/ hidden_size {llm.config.hidden_size} differs from config.json "
            f"hidden_size {config.hidden_size}",
            root,
        )
    if vision.config.hidden_size != config.mm_hidden_size:
        raise InputError(
            f"vision_tower/ hidden_size {vision.config.hidden_size} differs from config.json "
            f"mm_hidden_size {config.mm_hidden_size}",
            root,
        )
    if config.vocab_size and len(tokenizer) > config.vocab_size:
        logger.warning(
            "the tokenizer has %d tokens but llm/config.json vocab_size is %d; prompts using "
            "the extra ids will be refused",
            len(tokenizer),
            config.vocab_size,
        )
    projector = MlpDownsampleProjector.from_folder(
        config.projector_dir, config.mm_hidden_size, config.hidden_size
    )
    model = VilaModel(config, vision, projector.to(dtype=dtype), llm, processor)
    model.to(device).eval()
    return model, tokenizer, template_name
