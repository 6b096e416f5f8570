"""LoRA (or full) fine-tuning of transformers image-text-to-text models.

Works with the models the ``hf`` backend serves (llava-hf LLaVA, Qwen2-VL /
Qwen2.5-VL, Gemma 3 / MedGemma, ...). A conversation becomes the chat the
backend builds at inference (an ``{"type": "image"}`` entry where each image
stands, adjacent text joined) and is rendered with the processor's chat
template without generation prompt; the processor expands the image tokens.

Assistant spans are found by rendering prefixes: turn *i*'s answer starts
where ``chat[:i]`` rendered *with* generation prompt ends, and ends where
``chat[:i+1]`` rendered without it ends (the text's end for the last turn);
token boundaries come from tokenising those prefixes with their images and
comparing ids (:func:`~medm3.train.dataset.spans_to_labels`). Labels end at
the turn's last end-of-turn token (e.g. ``<|im_end|>``; a trailing newline
is not learned). When a template writes no end-of-turn token after the
assistant (llava-1.5), EOS is appended to the last answer so the model learns
to stop.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from medm3.errors import InputError, MedM3Error
from medm3.train.collate import causal_lm_loss, collate_hf
from medm3.train.dataset import IGNORE_INDEX, common_prefix
from medm3.train.recipe import (
    Recipe,
    enable_checkpointing,
    lora_if_enabled,
    pad_token_id,
    part_of,
    recipe_info,
    set_trainable,
    weight_dtype,
)
from medm3.vlm.base import Message

if TYPE_CHECKING:  # pragma: no cover
    from medm3.train.config import Config

logger = logging.getLogger(__name__)


def _n_images(chat: Sequence[dict[str, Any]]) -> int:
    return sum(1 for turn in chat for item in turn["content"] if item["type"] == "image")


class HFEncoder:
    """Conversation -> processor outputs with ``labels`` (per-token keys 1-D).

    Args:
        processor: The model's processor (with a chat template).
        max_length: Longest sequence; longer ones are cut on the right unless
            the cut would split an image (then kept whole, with a warning).
        stop_ids: End-of-turn/EOS ids.
        image_ids: Ids of image placeholder tokens.
    """

    def __init__(
        self, processor: Any, max_length: int, stop_ids: Sequence[int], image_ids: Sequence[int]
    ) -> None:
        from medm3.vlm.hf_chat import ChatFormatter

        self.processor = processor
        self.tokenizer = processor.tokenizer
        # The hf backend's own formatter: training text renders exactly like inference.
        self.formatter = ChatFormatter(processor)
        self.max_length = max_length
        self.stop_ids = set(stop_ids)
        self.image_ids = set(image_ids)

    def render(self, chat: Sequence[dict[str, Any]], generation_prompt: bool) -> str:
        """The chat template's text for ``chat``.

        Raises:
            InputError: The template rejects the conversation.
        """
        from jinja2.exceptions import TemplateError

        try:
            return self.processor.apply_chat_template(
                list(chat), add_generation_prompt=generation_prompt, tokenize=False
            )
        except TemplateError as exc:
            raise InputError(f"the chat template rejects this conversation: {exc}") from None

    def process(self, text: str, images: Sequence[Any]) -> dict[str, Any]:
        """Run the processor like the ``hf`` backend (batch of one, no padding)."""
        kwargs: dict[str, Any] = {"text": [text], "return_tensors": "pt"}
        if images:
            kwargs["images"] = [list(images)]
        bos = getattr(self.tokenizer, "bos_token", None)
        if bos and text.startswith(bos):
            kwargs["add_special_tokens"] = False
        try:
            return dict(self.processor(**kwargs))
        except ValueError as exc:
            raise InputError(f"the processor rejects this example: {exc}") from None

    def labelled(self, messages: Sequence[Message]) -> tuple[dict[str, Any], list[int]]:
        """Processor outputs of the full conversation and its labels (no truncation)."""
        chat, images = self.formatter.to_chat(messages)
        text = self.render(chat, generation_prompt=False)
        encoded = self.process(text, images)
        ids = encoded["input_ids"][0].tolist()
        labels = [IGNORE_INDEX] * len(ids)
        last: tuple[int, int] | None = None
        for i, turn in enumerate(chat):
            if turn["role"] != "assistant":
                continue
            head = self.render(chat[:i], generation_prompt=True)
            upto = text if i == len(chat) - 1 else self.render(chat[: i + 1], False)
            if not (text.startswith(head) and text.startswith(upto)):
                raise InputError(
                    "the chat template does not render conversation prefixes as prefixes of the "
                    "whole conversation; cannot find the assistant turns"
                )
            start = common_prefix(ids, self._ids(head, images[: _n_images(chat[:i])]))
            end = common_prefix(ids, self._ids(upto, images[: _n_images(chat[: i + 1])]))
            stops = [j for j in range(start, end) if ids[j] in self.stop_ids]
            if stops:
                end = stops[-1] + 1  # nothing after the end-of-turn token
            labels[start:end] = ids[start:end]
            last = (start, end)
        if last is not None and not any(ids[j] in self.stop_ids for j in range(*last)):
            eos = self.tokenizer.eos_token_id
            if eos is not None:
                encoded = self._append(encoded, eos)
                labels.append(eos)
        return encoded, labels

    def _ids(self, text: str, images: Sequence[Any]) -> list[int]:
        return self.process(text, images)["input_ids"][0].tolist()

    @staticmethod
    def _sequence_keys(encoded: dict[str, Any]) -> list[str]:
        shape = encoded["input_ids"].shape
        return [
            key
            for key, value in encoded.items()
            if isinstance(value, torch.Tensor)
            and value.shape == shape
            and not key.startswith(("pixel", "image"))
        ]

    def _append(self, encoded: dict[str, Any], token: int) -> dict[str, Any]:
        out = dict(encoded)
        for key in self._sequence_keys(encoded):
            value = token if key == "input_ids" else 1 if key == "attention_mask" else 0
            extra = torch.full((1, 1), value, dtype=encoded[key].dtype)
            out[key] = torch.cat([encoded[key], extra], dim=1)
        return out

    def __call__(self, messages: list[Message]) -> dict[str, Any]:
        """Encode one conversation: per-token keys as 1-D tensors, image tensors as is."""
        encoded, labels = self.labelled(messages)
        keys = self._sequence_keys(encoded)
        length = len(labels)
        if length > self.max_length:
            tail = encoded["input_ids"][0, self.max_length :].tolist()
            if any(t in self.image_ids for t in tail):
                logger.warning(
                    "an example of %d tokens is over data.max_length=%d, but cutting it would "
                    "split an image; it is kept whole",
                    length,
                    self.max_length,
                )
            else:
                length = self.max_length
        out = {key: encoded[key][0, :length] for key in keys}
        out["labels"] = torch.tensor(labels[:length], dtype=torch.long)
        for key, value in encoded.items():
            if key not in keys:
                out[key] = value
        return out


class HFForTraining(nn.Module):
    """Loss of a transformers VLM on a collated batch (floating inputs cast to its dtype).

    Args:
        model: The (possibly PEFT-wrapped) model.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        text = model.config.get_text_config()
        self.config = types.SimpleNamespace(hidden_size=text.hidden_size)

    def forward(self, labels: torch.Tensor, **inputs: Any) -> torch.Tensor:
        """``model(**inputs)`` then the masked causal-LM loss against ``labels``."""
        dtype = next(p for p in self.model.parameters() if p.is_floating_point()).dtype
        inputs = {
            k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
            for k, v in inputs.items()
        }
        out = self.model(**inputs, use_cache=False)
        return causal_lm_loss(out.logits, labels)


def collate_examples(examples: list[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Batch :class:`HFEncoder` outputs (1-D tensors are the per-token keys)."""
    keys = [k for k, v in examples[0].items() if isinstance(v, torch.Tensor) and v.ndim == 1]
    return collate_hf(examples, pad_id=pad_id, sequence_keys=keys)


def _stop_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: list[int] = []
    generation = getattr(model, "generation_config", None)
    for source in (getattr(generation, "eos_token_id", None), tokenizer.eos_token_id):
        for i in source if isinstance(source, (list, tuple)) else [source]:
            if i is not None and int(i) not in ids:
                ids.append(int(i))
    return ids


def _image_ids(processor: Any, model: Any) -> list[int]:
    tokenizer = processor.tokenizer
    ids = set()
    for attr in ("image_token", "boi_token", "eoi_token", "video_token"):
        token = getattr(processor, attr, None)
        if isinstance(token, str):
            ids.add(tokenizer.convert_tokens_to_ids(token))
    for attr in ("image_token_id", "image_token_index", "video_token_id"):
        for holder in (processor, model.config):
            value = getattr(holder, attr, None)
            if isinstance(value, int):
                ids.add(value)
    return sorted(i for i in ids if i is not None and i >= 0)


def build(config: Config, mixed_precision: str) -> Recipe:
    """Load a transformers VLM and its processor and make them ready to train.

    Args:
        config: The run configuration (``model.kind: hf``).
        mixed_precision: The resolved precision (``bf16``, ``fp16`` or ``no``).

    Returns:
        The :class:`Recipe`.

    Raises:
        MedM3Error: The model or processor cannot be loaded, or has no chat template.
        InputError: Bad LoRA targets.
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from medm3.train import export

    path = config.model.path
    dtype = weight_dtype(config, mixed_precision)
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": config.model.trust_remote_code}
    if config.model.attn_implementation:
        kwargs["attn_implementation"] = config.model.attn_implementation
    try:
        processor = AutoProcessor.from_pretrained(
            path, trust_remote_code=config.model.trust_remote_code
        )
        model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        detail = " ".join(str(exc).split())[:300]
        raise MedM3Error(f"cannot load '{path}' for training: {detail}") from None
    template = getattr(processor, "chat_template", None)
    if not template or getattr(processor, "tokenizer", None) is None:
        raise MedM3Error(f"'{path}' has no chat template/tokenizer in its processor")
    if config.train.gradient_checkpointing:
        enable_checkpointing(model)
    model, scaling = lora_if_enabled(model, config, part_of)
    module = HFForTraining(model)
    counts = set_trainable(module, part_of, config)
    module.train()
    tokenizer = processor.tokenizer
    encoder = HFEncoder(
        processor,
        config.data.max_length,
        _stop_ids(model, tokenizer),
        _image_ids(processor, model),
    )
    info = recipe_info("hf", path, counts, dtype, architecture=type(module.model).__name__)

    def save_adapter(state: dict[str, Any], folder: Path) -> None:
        export.save_peft_adapter(model, export.sub_state(state, "model."), folder)

    return Recipe(
        module=module,
        encode=encoder,
        collate=partial(collate_examples, pad_id=pad_token_id(tokenizer)),
        export=partial(
            export.export_hf,
            model=model,
            processor=processor,
            lora_scaling=scaling,
            dtype=config.export.dtype,
            info=info,
            trust_remote_code=config.model.trust_remote_code,
        ),
        save_adapter=save_adapter if config.lora.enabled else None,
        info=info,
    )
