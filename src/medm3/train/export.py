"""Write the fine-tuned model in a folder the inference backends load.

Both exporters take the *full* state dict of the training module (gathered by
``accelerator.get_state_dict``, so it works the same under DDP, FSDP and
DeepSpeed ZeRO-3) and fold the LoRA adapters into the base weights
(``W + B @ A * alpha / r``), so the export is a plain checkpoint:

- ``vila``: the released layout (``config.json``, ``llm/``, ``vision_tower/``,
  ``mm_projector/``); config, tokenizer and preprocessor files are copied
  from the base checkpoint, weights rewritten (sharded safetensors). Load it
  with ``m3 chat --model DIR``.
- ``hf``: what ``save_pretrained`` writes (config, safetensors under the
  architecture's on-disk key names, generation config) plus the processor
  with its chat template. Load it with ``m3 chat --backend hf --model DIR``.

With ``export.save_adapter`` the PEFT adapter of a LoRA run is written to
``DIR/adapter`` as well (``adapter_config.json`` names the base model).
Every export also holds ``medm3_train.json`` (base model, settings, steps).
The folder appears atomically (written beside it, then renamed).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medm3.train.recipe import torch_dtype

#: Files of a model folder that hold weights (rewritten, never copied).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5")
INFO_NAME = "medm3_train.json"


def sub_state(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The entries under ``prefix``, with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def merge_lora(state: dict[str, Any], scaling: float | None) -> dict[str, Any]:
    """Fold PEFT LoRA weights into their base layers and restore the base key names.

    ``x.base_layer.weight`` + ``x.lora_A.<name>.weight`` + ``x.lora_B.<name>.weight``
    become ``x.weight = W + (B @ A) * scaling`` (computed in float32); the PEFT
    wrapper prefix ``base_model.model.`` is dropped. Without LoRA keys the state
    is returned with keys unchanged.

    Args:
        state: A state dict that may hold PEFT-wrapped modules.
        scaling: ``alpha / r`` (``None``: no LoRA in this run).

    Raises:
        ValueError: A LoRA layer without its A/B pair.
    """
    out: dict[str, Any] = {}
    for key, value in state.items():
        if ".lora_" in key:
            continue
        if key.endswith(".base_layer.weight"):
            prefix = key[: -len(".base_layer.weight")]
            pairs = [
                (k, k.replace(".lora_A.", ".lora_B."))
                for k in state
                if k.startswith(prefix + ".lora_A.") and k.endswith(".weight")
            ]
            if not pairs or scaling is None:
                raise ValueError(f"LoRA layer {prefix} has no lora_A/lora_B weights")
            merged = value.detach().float()
            for a_key, b_key in pairs:
                a, b = state[a_key].detach().float(), state[b_key].detach().float()
                merged = merged + (b @ a) * scaling
            out[prefix + ".weight"] = merged.to(value.dtype)
            continue
        out[key.replace(".base_layer.", ".")] = value
    return {k.replace("base_model.model.", "", 1): v for k, v in out.items()}


def write_weights(
    state: dict[str, Any], folder: Path, dtype: str, max_shard_size: str = "5GB"
) -> None:
    """Write ``state`` as (sharded) safetensors in ``dtype``, with an index when sharded."""
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    target = torch_dtype(dtype)
    seen: set[int] = set()
    tensors: dict[str, Any] = {}
    for key, value in state.items():
        tensor = value.detach().to("cpu")
        tensor = tensor.to(target) if tensor.is_floating_point() else tensor
        if tensor.data_ptr() in seen:  # tied weights: safetensors refuses shared storage
            tensor = tensor.clone()
        seen.add(tensor.data_ptr())
        tensors[key] = tensor.contiguous()
    split = split_torch_state_dict_into_shards(tensors, max_shard_size=max_shard_size)
    for filename, keys in split.filename_to_tensors.items():
        shard = {k: tensors[k] for k in keys}
        save_file(shard, str(folder / filename), metadata={"format": "pt"})
    if split.is_sharded:
        index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
        _write_json(folder / "model.safetensors.index.json", index)


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _copy_config_files(source: Path, target: Path, dtype: str) -> None:
    """Copy every non-weight file of ``source``; set the dtype in ``config.json``."""
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        if item.is_file() and not item.name.endswith(WEIGHT_SUFFIXES):
            if item.name == "model.safetensors.index.json":
                continue
            shutil.copy2(item, target / item.name)
    config = target / "config.json"
    if config.is_file():
        data = json.loads(config.read_text(encoding="utf-8"))
        for key in ("dtype", "torch_dtype"):
            if key in data:
                data[key] = dtype
        _write_json(config, data)


@contextlib.contextmanager
def atomic_folder(final: Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``final``; it replaces ``final`` on success."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_vila(
    state: dict[str, Any],
    folder: Path,
    *,
    base: Path,
    lora_scaling: float | None,
    dtype: str,
    info: dict[str, Any],
) -> Path:
    """Write a VILA-M3 checkpoint folder from the state of a ``VilaForTraining`` module.

    Args:
        state: Full state dict (keys ``vila.llm.*``, ``vila.vision_tower.*``,
            ``vila.projector.*``).
        folder: Output folder (replaced atomically).
        base: The base checkpoint (its config/tokenizer/preprocessor files are copied).
        lora_scaling: ``alpha / r`` of a LoRA run, else ``None``.
        dtype: Stored dtype (``bfloat16`` like the released checkpoints).
        info: Provenance written to ``medm3_train.json``.

    Returns:
        ``folder``.
    """
    parts = {
        "llm": merge_lora(sub_state(state, "vila.llm."), lora_scaling),
        "vision_tower": sub_state(state, "vila.vision_tower."),
        "mm_projector": sub_state(state, "vila.projector."),
    }
    with atomic_folder(Path(folder)) as tmp:
        shutil.copy2(base / "config.json", tmp / "config.json")
        root = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
        root["model_dtype"] = f"torch.{dtype}"
        _write_json(tmp / "config.json", root)
        for name, weights in parts.items():
            _copy_config_files(base / name, tmp / name, dtype)
            write_weights(weights, tmp / name, dtype)
        _write_json(tmp / INFO_NAME, info)
    return Path(folder)


def export_hf(
    state: dict[str, Any],
    folder: Path,
    *,
    model: Any,
    processor: Any,
    lora_scaling: float | None,
    dtype: str,
    info: dict[str, Any],
    trust_remote_code: bool = False,
) -> Path:
    """Write a transformers model folder from the state of an ``HFForTraining`` module.

    Args:
        state: Full state dict (keys ``model.*``).
        folder: Output folder (replaced atomically).
        model: The (possibly PEFT-wrapped) transformers model, for its configs.
        processor: Its processor (saved with the chat template).
        lora_scaling: ``alpha / r`` of a LoRA run, else ``None``.
        dtype: Stored dtype.
        info: Provenance written to ``medm3_train.json``.
        trust_remote_code: Needed for architectures with their own code.

    Returns:
        ``folder``.

    Raises:
        ValueError: The merged weights do not fit the architecture.
    """
    import torch
    from transformers import AutoModelForImageTextToText

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    target = torch_dtype(dtype)
    weights = {
        k: v.detach().to("cpu", target) if v.is_floating_point() else v.detach().to("cpu")
        for k, v in merge_lora(sub_state(state, "model."), lora_scaling).items()
    }
    # A weightless copy of the architecture takes the merged tensors, so save_pretrained
    # writes them under the checkpoint key names the architecture uses on disk.
    with torch.device("meta"):
        fresh = AutoModelForImageTextToText.from_config(
            base.config, dtype=target, trust_remote_code=trust_remote_code
        )
    result = fresh.load_state_dict(weights, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"exported weights do not match {type(fresh).__name__}: missing "
            f"{result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]}"
        )
    fresh.tie_weights()
    if getattr(base, "generation_config", None) is not None:
        fresh.generation_config = base.generation_config
    with atomic_folder(Path(folder)) as tmp:
        fresh.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        _write_json(tmp / INFO_NAME, info)
    return Path(folder)


def save_peft_adapter(peft_model: Any, state: dict[str, Any], folder: Path) -> Path:
    """Write the PEFT adapter (``adapter_config.json`` + weights) from a full state dict.

    Args:
        peft_model: The PEFT model (for its adapter config).
        state: Its state dict (PEFT key names, ``base_model.model.*``).
        folder: Output folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(folder), state_dict=state)
    return folder
