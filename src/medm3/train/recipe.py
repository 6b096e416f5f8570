"""What the training loop needs from a model kind, and the helpers both kinds share.

:func:`medm3.train.vila_sft.build` and :func:`medm3.train.hf_sft.build` return a
:class:`Recipe`: the module to optimise (its ``forward(**batch)`` returns the
loss), the encoder turning a conversation into an example, the collate
function and the exporter. Freezing, LoRA and dtype rules live here so both
kinds apply them the same way.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medm3.errors import InputError, MissingDependencyError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from medm3.train.config import Config

logger = logging.getLogger(__name__)

#: Parameter-name fragments of the projector (checked first), then of the vision tower.
PROJECTOR_KEYS = ("multi_modal_projector", "mm_projector", "visual.merger", "connector")
VISION_KEYS = ("vision_tower", "visual", "vision_model", "vision_encoder", "image_encoder")


@dataclass
class Recipe:
    """A model kind made ready for the training loop.

    Attributes:
        module: The ``nn.Module`` to prepare and optimise; ``module(**batch)``
            returns the scalar loss.
        encode: Conversation (list of messages) -> example dict.
        collate: List of examples -> batch dict (CPU tensors).
        export: ``export(state_dict, folder)``: write the final model from the
            full state dict of ``module`` (keys as in ``module.state_dict()``).
        save_adapter: ``save_adapter(state_dict, folder)`` for LoRA runs, else ``None``.
        info: Facts for logs and the export's ``medm3_train.json``.
    """

    module: Any
    encode: Callable[[list[Any]], dict[str, Any]]
    collate: Callable[[list[dict[str, Any]]], dict[str, Any]]
    export: Callable[[dict[str, Any], Path], None]
    save_adapter: Callable[[dict[str, Any], Path], None] | None = None
    info: dict[str, Any] = field(default_factory=dict)


def part_of(name: str) -> str:
    """``llm``, ``vision_tower`` or ``projector`` for a parameter/module name of an HF VLM."""
    if any(key in name for key in PROJECTOR_KEYS):
        return "projector"
    if any(key in name for key in VISION_KEYS):
        return "vision_tower"
    return "llm"


def torch_dtype(name: str) -> torch.dtype:
    """``float32`` / ``bfloat16`` / ``float16`` -> torch dtype."""
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def weight_dtype(config: Config, mixed_precision: str) -> torch.dtype:
    """Dtype to load the weights in (see :attr:`ModelConfig.dtype`)."""
    if config.model.dtype != "auto":
        return torch_dtype(config.model.dtype)
    if config.lora.enabled and mixed_precision == "bf16":
        return torch_dtype("bfloat16")  # frozen base in bf16; trainable weights upcast
    return torch_dtype("float32")


def lora_targets(model: nn.Module, names: Iterable[str], part: Callable[[str], str]) -> list[str]:
    """Full names of the LLM's ``torch.nn.Linear`` layers whose last name is in ``names``.

    Raises:
        InputError: No layer matches.
    """
    from torch import nn

    wanted = set(names)
    found = [
        full
        for full, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and full.rsplit(".", 1)[-1] in wanted
        and part(full) == "llm"
    ]
    if not found:
        raise InputError(
            f"lora.target_modules {sorted(wanted)} match no linear layer of the LLM; use names "
            "such as q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj"
        )
    return found


def apply_lora(model: nn.Module, config: Config, targets: list[str]) -> nn.Module:
    """Wrap ``model`` with PEFT LoRA adapters on ``targets`` (fp32 adapter weights).

    Raises:
        MissingDependencyError: peft is not installed.
    """
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:  # pragma: no cover - depends on the environment
        raise MissingDependencyError("peft", "train", "LoRA fine-tuning") from None
    lora = config.lora
    peft_config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        bias="none",
    )
    with warnings.catch_warnings():  # peft probes a deprecated transformers attribute
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        return get_peft_model(model, peft_config)


def lora_if_enabled(
    model: nn.Module, config: Config, part: Callable[[str], str]
) -> tuple[nn.Module, float | None]:
    """``model`` with LoRA adapters when ``lora.enabled``, and the scaling to merge them with.

    Args:
        model: The module to adapt.
        config: The run configuration (``lora`` section).
        part: Parameter name -> model part (``llm`` ...), to pick the targets.

    Returns:
        ``(adapted model, alpha / r)``, or ``(model, None)`` without LoRA.

    Raises:
        InputError: Bad LoRA targets.
    """
    if not config.lora.enabled:
        return model, None
    targets = lora_targets(model, config.lora.target_modules, part)
    return apply_lora(model, config, targets), config.lora.alpha / config.lora.r


def pad_token_id(tokenizer: Any) -> int:
    """The tokenizer's pad id, else its EOS id, else 0."""
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return int(tokenizer.eos_token_id or 0)


def recipe_info(
    kind: str, base: Any, trainable: dict[str, int], dtype: torch.dtype, **facts: Any
) -> dict[str, Any]:
    """The facts of a training run kept with its exports (``facts`` follow ``base``)."""
    return {
        "kind": kind,
        "base": str(base),
        **facts,
        "trainable": trainable,
        "weight_dtype": str(dtype).removeprefix("torch."),
    }


def set_trainable(module: nn.Module, part: Callable[[str], str], config: Config) -> dict[str, int]:
    """Freeze/unfreeze parameters by part; LoRA weights always train.

    With ``model.dtype: auto``, trainable weights loaded in bf16 (the frozen
    base of a LoRA run) are upcast to float32.

    Returns:
        Trainable parameter counts per part (``lora`` for adapters).

    Raises:
        InputError: Nothing ends up trainable.
    """
    import torch

    wanted = {
        "llm": config.tune.llm and not config.lora.enabled,
        "vision_tower": config.tune.vision_tower,
        "projector": config.tune.projector,
    }
    counts: dict[str, int] = {}
    for name, param in module.named_parameters():
        key = "lora" if "lora_" in name else part(name)
        train = key == "lora" or wanted[key]
        param.requires_grad_(train)
        if train:
            if config.model.dtype == "auto" and param.dtype != torch.float32:
                param.data = param.data.float()
            counts[key] = counts.get(key, 0) + param.numel()
    if not counts:
        raise InputError("no trainable parameters (check tune.* and lora.enabled)")
    return counts


def param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on matrices, none on biases, norms and 1-D weights."""
    decay, no_decay = [], []
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or name.endswith(".bias") else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


def enable_checkpointing(model: Any) -> bool:
    """Turn on non-reentrant gradient checkpointing when the model supports it."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        return False
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:  # pragma: no cover - older transformers
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    return True
