"""The typed configuration of ``m3 train``: YAML sections, validation, dotted overrides.

A config file has five sections (every key optional except the three marked)::

    model:  {kind: vila|hf, path: REQUIRED, template, dtype, trust_remote_code, attn_implementation}
    data:   {train: REQUIRED list of LLaVA JSON files, max_length, num_workers, image_folder}
    tune:   {llm, vision_tower, projector}          # which parts train (full fine-tune: all)
    lora:   {enabled, r, alpha, dropout, target_modules}
    train:  {output_dir: REQUIRED, epochs, max_steps, batch_size, gradient_accumulation_steps,
             learning_rate, weight_decay, warmup_ratio, lr_scheduler, max_grad_norm,
             mixed_precision, gradient_checkpointing, seed, logging_steps, save_steps,
             save_total_limit, resume}
    export: {enabled, dir, dtype, save_adapter}

Relative paths are relative to the current directory. ``--set section.key=value``
overrides one key; the value is parsed as YAML (``--set data.train=[a.json,b.json]``).
Every problem (unknown key, wrong type, out-of-range value) is one
:class:`~medm3.errors.InputError` naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from medm3.errors import InputError
from medm3.utils.suggest import did_you_mean

#: Linear layers of Llama-like LLMs that LoRA adapts by default.
DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _opt(default: Any, *, choices: Sequence[Any] | None = None, low: float | None = None) -> Any:
    meta: dict[str, Any] = {}
    if choices is not None:
        meta["choices"] = tuple(choices)
    if low is not None:
        meta["min"] = low
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    """``model:``: what to fine-tune.

    Attributes:
        kind: ``vila`` (a VILA-M3 / VILA1.5 checkpoint folder or Hub id) or ``hf``
            (a transformers image-text-to-text model with a chat template).
        path: Local folder or Hub id of the base model.
        template: ``vila`` only: ``llama_3`` or ``vicuna_v1`` (default: detected).
        dtype: Weight dtype while training: ``auto`` (float32 master weights; the
            frozen base of a LoRA run in bfloat16 when training in bf16),
            ``float32``, ``bfloat16`` or ``float16``.
        trust_remote_code: ``hf`` only: allow the model's own Python code.
        attn_implementation: ``sdpa``, ``eager``, ``flash_attention_2``... (default:
            transformers' choice).
    """

    kind: str = _opt("vila", choices=("vila", "hf"))
    path: str = ""
    template: str | None = _opt(None, choices=("llama_3", "vicuna_v1", None))
    dtype: str = _opt("auto", choices=("auto", "float32", "bfloat16", "float16"))
    trust_remote_code: bool = False
    attn_implementation: str | None = None


@dataclass
class DataConfig:
    """``data:``: the training conversations.

    Attributes:
        train: LLaVA JSON files (a mixture is one longer file); image paths in a
            file are relative to its folder.
        max_length: Longest training sequence in positions (after image tokens).
        num_workers: DataLoader worker processes (0: load in the main process).
        image_folder: Resolve image paths against this folder instead.
    """

    train: list[str] = field(default_factory=list)
    max_length: int = _opt(4096, low=16)
    num_workers: int = _opt(2, low=0)
    image_folder: str | None = None


@dataclass
class TuneConfig:
    """``tune:``: which parts of the model train (LoRA adapts the LLM instead of ``llm``).

    Attributes:
        llm: Train all LLM weights (ignored when LoRA is enabled: then only the
            adapters of the LLM train).
        vision_tower: Train the vision encoder.
        projector: Train the vision-to-LLM projector.
    """

    llm: bool = True
    vision_tower: bool = True
    projector: bool = True


@dataclass
class LoraConfig:
    """``lora:``: PEFT LoRA on the LLM's linear layers.

    Attributes:
        enabled: Train LoRA adapters instead of the full LLM.
        r: Rank.
        alpha: Scaling numerator (scale = alpha / r).
        dropout: Dropout on the adapter input.
        target_modules: Names of the LLM's linear layers to adapt.
    """

    enabled: bool = False
    r: int = _opt(16, low=1)
    alpha: float = _opt(32.0, low=0)
    dropout: float = _opt(0.05, low=0)
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))


@dataclass
class TrainConfig:
    """``train:``: the optimisation loop.

    Attributes:
        output_dir: Checkpoints, ``train_log.jsonl``, ``config.yaml`` and ``final/``.
        epochs: Passes over the data (fractions allowed).
        max_steps: Optimizer steps; > 0 overrides ``epochs``.
        batch_size: Conversations per device per micro-batch.
        gradient_accumulation_steps: Micro-batches per optimizer step.
        learning_rate: Peak learning rate.
        weight_decay: AdamW weight decay (not on biases and norms).
        warmup_ratio: Fraction of the steps with linear warm-up.
        lr_scheduler: ``cosine``, ``linear`` or ``constant`` (after warm-up).
        max_grad_norm: Gradient clipping (0: off).
        mixed_precision: ``auto`` (bf16 on GPUs that support it, else none),
            ``bf16``, ``fp16`` or ``no``.
        gradient_checkpointing: Recompute activations in backward (less memory).
        seed: Seed of initialisation, data order and dropout.
        logging_steps: Log every N optimizer steps.
        save_steps: Checkpoint every N optimizer steps (0: only at the end).
        save_total_limit: Checkpoints kept (the newest ones).
        resume: ``auto`` (continue from the newest checkpoint of ``output_dir``
            if any), ``never`` (refuse to run over existing checkpoints) or a
            checkpoint folder.
    """

    output_dir: str = ""
    epochs: float = _opt(2.0, low=0)
    max_steps: int = _opt(0, low=0)
    batch_size: int = _opt(1, low=1)
    gradient_accumulation_steps: int = _opt(1, low=1)
    learning_rate: float = _opt(2e-5, low=0)
    weight_decay: float = _opt(0.0, low=0)
    warmup_ratio: float = _opt(0.03, low=0)
    lr_scheduler: str = _opt("cosine", choices=("cosine", "linear", "constant"))
    max_grad_norm: float = _opt(1.0, low=0)
    mixed_precision: str = _opt("auto", choices=("auto", "bf16", "fp16", "no"))
    gradient_checkpointing: bool = True
    seed: int = 42
    logging_steps: int = _opt(1, low=1)
    save_steps: int = _opt(500, low=0)
    save_total_limit: int = _opt(2, low=1)
    resume: str = "auto"


@dataclass
class ExportConfig:
    """``export:``: the final model folder.

    Attributes:
        enabled: Write the final model when training ends.
        dir: Output folder (default: ``OUTPUT_DIR/final``).
        dtype: Stored weight dtype (the released checkpoints are bfloat16).
        save_adapter: With LoRA, also write the PEFT adapter to ``DIR/adapter``
            (the exported model always has the adapters merged in).
    """

    enabled: bool = True
    dir: str | None = None
    dtype: str = _opt("bfloat16", choices=("float32", "bfloat16", "float16"))
    save_adapter: bool = False


@dataclass
class Config:
    """A complete ``m3 train`` configuration (see the module docstring)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML-serialisable)."""
        return dataclasses.asdict(self)

    @property
    def export_dir(self) -> Path:
        """Folder of the exported model."""
        return Path(self.export.dir or Path(self.train.output_dir) / "final")


_SECTION_TYPES = {
    "model": ModelConfig,
    "data": DataConfig,
    "tune": TuneConfig,
    "lora": LoraConfig,
    "train": TrainConfig,
    "export": ExportConfig,
}


def _unknown(key: str, known: Sequence[str], where: str) -> InputError:
    hint = did_you_mean(key.rsplit(".", 1)[-1], known, n=1)
    hint = f" {hint}" if hint else ""
    return InputError(f"unknown key '{key}'.{hint} The {where} keys are: {', '.join(known)}")


def _type_name(tp: Any) -> str:
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
    if tp in names:
        return names[tp]
    origin = typing.get_origin(tp)
    if origin is list:
        return "a list of strings"
    if origin in (Union, types.UnionType):
        return " or ".join(
            "null" if a is type(None) else _type_name(a) for a in typing.get_args(tp)
        )
    return str(tp)


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(key, value, arg)
            except InputError:
                continue
    elif origin is list:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
            return list(value)
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if math.isfinite(number):
                return number
    elif tp is str and isinstance(value, str):
        return value
    raise InputError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def _build_section(name: str, raw: Any) -> Any:
    cls = _SECTION_TYPES[name]
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise InputError(f"{name}: expected a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        full = f"{name}.{key}"
        if key not in fields:
            raise _unknown(full, list(fields), f"'{name}'")
        value = _coerce(full, value, hints[key])
        meta = fields[key].metadata
        if "choices" in meta and value not in meta["choices"]:
            shown = ", ".join("null" if c is None else str(c) for c in meta["choices"])
            raise InputError(f"{full}: must be one of {shown}, got {value!r}")
        if "min" in meta and value is not None and value < meta["min"]:
            raise InputError(f"{full}: must be >= {meta['min']}, got {value!r}")
        values[key] = value
    return cls(**values)


def _check(config: Config) -> None:
    """Cross-field checks and required keys."""
    if not config.model.path:
        raise InputError("model.path is required (a checkpoint folder or Hub id)")
    if not config.data.train:
        raise InputError("data.train is required (one or more LLaVA JSON files)")
    if not config.train.output_dir:
        raise InputError("train.output_dir is required")
    if config.model.kind == "hf" and config.model.template is not None:
        raise InputError("model.template applies to kind 'vila' only (hf uses its processor)")
    resume = config.train.resume
    if resume not in ("auto", "never") and not resume.strip():
        raise InputError("train.resume: use auto, never or a checkpoint folder")
    if config.train.warmup_ratio > 1:
        raise InputError(f"train.warmup_ratio: must be <= 1, got {config.train.warmup_ratio}")
    if config.lora.dropout >= 1:
        raise InputError(f"lora.dropout: must be < 1, got {config.lora.dropout}")
    if config.train.max_steps == 0 and config.train.epochs <= 0:
        raise InputError("train.epochs must be > 0 (or set train.max_steps)")
    trains_something = (
        config.lora.enabled or config.tune.llm or config.tune.vision_tower or config.tune.projector
    )
    if not trains_something:
        raise InputError("nothing to train: enable lora or one of tune.llm/vision_tower/projector")


def config_from_dict(raw: Any) -> Config:
    """Build and validate a :class:`Config` from nested dicts.

    Raises:
        InputError: Unknown section or key, wrong type, bad value, missing required key.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise InputError("the config must be a mapping of sections (model, data, train ...)")
    for key in raw:
        if key not in _SECTION_TYPES:
            raise _unknown(str(key), list(_SECTION_TYPES), "top-level")
    config = Config(**{name: _build_section(name, raw.get(name)) for name in _SECTION_TYPES})
    _check(config)
    return config


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``section.key=value`` into the key path and the YAML-parsed value.

    Raises:
        InputError: No ``=`` or an empty key.
    """
    import yaml

    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise InputError(f"--set expects section.key=value, got {text!r}")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key.split("."), parsed


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``--set`` overrides to the raw nested dict (in place) and return it.

    Raises:
        InputError: Bad syntax, unknown section/key, or a path that is not
            ``section.key``.
    """
    for text in overrides:
        path, value = parse_override(text)
        if len(path) != 2:
            raise InputError(f"--set {text!r}: keys are section.key, e.g. train.learning_rate=1e-4")
        section, key = path
        if section not in _SECTION_TYPES:
            raise _unknown(section, list(_SECTION_TYPES), "top-level")
        names = [f.name for f in dataclasses.fields(_SECTION_TYPES[section])]
        if key not in names:
            raise _unknown(f"{section}.{key}", names, f"'{section}'")
        current = raw.get(section)
        if current is None:
            current = raw[section] = {}
        elif not isinstance(current, dict):
            raise InputError(f"{section}: expected a mapping of keys, got {current!r}")
        current[key] = value
    return raw


def load_config(path: str | os.PathLike[str] | None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config, apply ``--set`` overrides and validate.

    Args:
        path: The YAML file (``None``: start from defaults; overrides must then
            give the required keys).
        overrides: ``section.key=value`` strings, applied in order.

    Returns:
        The validated :class:`Config`.

    Raises:
        InputError: Unreadable file, invalid YAML, or an invalid config (one line
            naming the key; prefixed with the file).
    """
    import yaml

    raw: Any = {}
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise InputError("config file not found", file)
        try:
            raw = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read: {exc}", file) from None
        except yaml.YAMLError as exc:
            first = " ".join(str(exc).split())[:200]
            raise InputError(f"invalid YAML: {first}", file) from None
        if not isinstance(raw, dict):
            raise InputError(
                "the config must be a mapping of sections (model, data, train ...)", file
            )
    try:
        return config_from_dict(apply_overrides(raw, overrides))
    except InputError as exc:
        if path is None or exc.path:
            raise
        raise InputError(exc.message, path) from None


def dump_config(config: Config) -> str:
    """YAML text of ``config`` (written to ``OUTPUT_DIR/config.yaml``)."""
    import yaml

    return yaml.safe_dump(config.to_dict(), sort_keys=False)
