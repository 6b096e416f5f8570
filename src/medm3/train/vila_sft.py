"""Supervised fine-tuning of native VILA-M3 checkpoints (full or LoRA on the LLM).

Text: the conversation is rendered by :func:`medm3.vlm.vila.templates.render_prompt`
with ``add_generation_prompt=False`` and tokenised by
:func:`medm3.vlm.vila.tokenize.tokenize_prompt`, the functions inference uses.
Labels are ``-100`` except on each assistant answer and its end-of-turn token
(``<|eot_id|>`` / ``</s>``; ``<|end_of_text|>`` for the last ``llama_3`` turn):
an answer starts where the inference prompt of that turn (ending with the
generation prompt) ends, and ends with the turn separator.

Images: preprocessed by :meth:`VilaModel.preprocess`; in :class:`VilaForTraining`
SigLIP ``hidden_states[-2]`` go through the projector and replace each
``-200`` sentinel, as :meth:`VilaModel.splice` does (ids embedded with the
sentinel set to 0), with gradients. Sequences longer than ``data.max_length``
are cut on the right after splicing, like the reference trainer.
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

from medm3.train.collate import causal_lm_loss, collate_vila
from medm3.train.dataset import IGNORE_INDEX, spans_to_labels
from medm3.train.recipe import (
    Recipe,
    enable_checkpointing,
    lora_if_enabled,
    pad_token_id,
    recipe_info,
    set_trainable,
    weight_dtype,
)
from medm3.vlm.base import Message
from medm3.vlm.vila.model import VilaModel
from medm3.vlm.vila.templates import get_template, render_prompt
from medm3.vlm.vila.tokenize import IMAGE_TOKEN_INDEX, tokenize_prompt

if TYPE_CHECKING:  # pragma: no cover
    from medm3.train.config import Config

logger = logging.getLogger(__name__)

PARTS = {"llm": "llm", "vision_tower": "vision_tower", "projector": "projector"}


def assistant_spans(
    messages: Sequence[Message], template: str
) -> tuple[str, list[Any], list[tuple[int, int]]]:
    """Training text, images, and the character span of every assistant turn.

    Args:
        messages: The conversation (ends with an assistant turn).
        template: ``llama_3`` or ``vicuna_v1``.

    Returns:
        ``(text, images, spans)``: the text rendered without generation prompt;
        each span runs from the end of that turn's inference prompt to the end
        of the turn's separator.

    Raises:
        RuntimeError: A prefix render is not a prefix of the full text (the
            template changed in a way this module does not handle).
    """
    tpl = get_template(template)
    text, images = render_prompt(messages, tpl, add_generation_prompt=False)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message.role != "assistant":
            continue
        head, _ = render_prompt(messages[:i], tpl, add_generation_prompt=True)
        if i == len(messages) - 1:
            upto = text
        else:
            upto, _ = render_prompt(messages[: i + 1], tpl, add_generation_prompt=True)
            upto = upto[: len(upto) - len(tpl.generation_prompt)]
        if not (text.startswith(head) and text.startswith(upto)):
            raise RuntimeError(f"template {tpl.name}: prompt prefixes do not match the text")
        spans.append((len(head), len(upto)))
    return text, images, spans


class _ImagePrep:
    """Picklable image preprocessing of a VILA checkpoint (:meth:`VilaModel.preprocess`)."""

    _pad_to_square = VilaModel._pad_to_square
    preprocess = VilaModel.preprocess

    def __init__(self, model: VilaModel) -> None:
        self.config = model.config
        self.image_processor = model.image_processor


class VilaEncoder:
    """Conversation -> ``input_ids`` (with sentinels), ``labels``, ``pixel_values``.

    Args:
        tokenizer: The checkpoint's tokenizer.
        template: ``llama_3`` or ``vicuna_v1``.
        max_length: Ids beyond this are dropped (with the images of dropped sentinels).
        preprocess: ``images -> (n, 3, S, S)`` pixel values; ``None`` for text only.
    """

    def __init__(
        self, tokenizer: Any, template: str, max_length: int, preprocess: Any = None
    ) -> None:
        self.tokenizer = tokenizer
        self.template = get_template(template).name
        self.max_length = max_length
        self.preprocess = preprocess

    def ids_and_labels(self, messages: Sequence[Message]) -> tuple[list[int], list[int], list]:
        """Ids, labels and images of a conversation (no truncation)."""
        text, images, spans = assistant_spans(messages, self.template)
        ids = tokenize_prompt(text, self.tokenizer)
        labels = spans_to_labels(ids, spans, lambda p: tokenize_prompt(text[:p], self.tokenizer))
        return ids, labels, images

    def __call__(self, messages: list[Message]) -> dict[str, Any]:
        """Encode one conversation (see the class docstring)."""
        ids, labels, images = self.ids_and_labels(messages)
        ids, labels = ids[: self.max_length], labels[: self.max_length]
        images = images[: ids.count(IMAGE_TOKEN_INDEX)]
        pixels = None
        if images and self.preprocess is not None:
            pixels = self.preprocess.preprocess(images)
        return {"input_ids": ids, "labels": labels, "pixel_values": pixels}


class VilaForTraining(nn.Module):
    """Training forward of a :class:`VilaModel`: encode, splice with gradients, LM loss.

    Args:
        vila: The composed model (its ``llm`` may be a PEFT model).
        max_length: Longest spliced sequence; longer ones are cut on the right.
    """

    def __init__(self, vila: VilaModel, max_length: int) -> None:
        super().__init__()
        self.vila = vila
        self.max_length = max_length
        # DeepSpeed "auto" bucket sizes read model.config.hidden_size.
        self.config = types.SimpleNamespace(hidden_size=vila.config.hidden_size)

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """As :meth:`VilaModel.encode_images`, with gradients: ``(n, T, H)``."""
        return self.vila.project_images(pixel_values)

    def splice_batch(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        features: Sequence[torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Embed right-padded ids and splice the image features at the sentinels.

        Returns:
            ``(embeds (B, L, H), attention_mask (B, L), labels (B, L))``, right-padded;
            image positions are labelled ``-100``.
        """
        embed = self.vila.llm.get_input_embeddings()
        device = embed.weight.device
        input_ids, labels = input_ids.to(device), labels.to(device)
        is_image = input_ids == IMAGE_TOKEN_INDEX
        text = embed(input_ids.masked_fill(is_image, 0))
        rows: list[torch.Tensor] = []
        row_labels: list[torch.Tensor] = []
        used = 0
        for b in range(input_ids.shape[0]):
            length = int(attention_mask[b].sum())
            pieces, labs, start = [], [], 0
            for slot in is_image[b, :length].nonzero().flatten().tolist():
                feats = features[used].to(device=device, dtype=text.dtype)
                used += 1
                pieces += [text[b, start:slot], feats]
                labs += [labels[b, start:slot], labels.new_full((feats.shape[0],), IGNORE_INDEX)]
                start = slot + 1
            pieces.append(text[b, start:length])
            labs.append(labels[b, start:length])
            rows.append(torch.cat(pieces)[: self.max_length])
            row_labels.append(torch.cat(labs)[: self.max_length])
        if used != len(features):
            raise ValueError(f"{len(features)} images for {used} <image> sentinels in the batch")
        longest = max(r.shape[0] for r in rows)
        embeds = text.new_zeros(len(rows), longest, text.shape[-1])
        mask = torch.zeros(len(rows), longest, dtype=torch.long, device=device)
        out_labels = torch.full((len(rows), longest), IGNORE_INDEX, dtype=torch.long, device=device)
        for b, (row, lab) in enumerate(zip(rows, row_labels, strict=True)):
            embeds[b, : row.shape[0]] = row
            mask[b, : row.shape[0]] = 1
            out_labels[b, : lab.shape[0]] = lab
        return embeds, mask, out_labels

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of a batch from :func:`~medm3.train.collate.collate_vila`."""
        features: Sequence[torch.Tensor] = []
        if pixel_values is not None:
            features = self.encode_images(pixel_values)
        embeds, mask, out_labels = self.splice_batch(input_ids, attention_mask, labels, features)
        out = self.vila.llm(inputs_embeds=embeds, attention_mask=mask, use_cache=False)
        return causal_lm_loss(out.logits, out_labels)


def _part(name: str) -> str:
    head = name.split(".", 2)[1] if name.startswith("vila.") else name.split(".", 1)[0]
    return PARTS.get(head, "llm")


def build(config: Config, mixed_precision: str) -> Recipe:
    """Load a VILA-M3 checkpoint and make it ready to train.

    Args:
        config: The run configuration (``model.kind: vila``).
        mixed_precision: The resolved precision (``bf16``, ``fp16`` or ``no``).

    Returns:
        The :class:`Recipe`.

    Raises:
        InputError: Bad checkpoint, template or LoRA targets.
    """
    from medm3.train import export
    from medm3.vlm.vila.loader import load_model, resolve_checkpoint

    root = resolve_checkpoint(config.model.path)
    dtype = weight_dtype(config, mixed_precision)
    vila, tokenizer, template = load_model(
        root, device="cpu", dtype=dtype, template=config.model.template
    )
    if config.model.attn_implementation:
        vila.llm.set_attn_implementation(config.model.attn_implementation)
    checkpointing = config.train.gradient_checkpointing
    if checkpointing:
        enable_checkpointing(vila.llm)
        if config.tune.vision_tower:
            enable_checkpointing(vila.vision_tower)
    vila.llm, scaling = lora_if_enabled(vila.llm, config, lambda _: "llm")
    module = VilaForTraining(vila, config.data.max_length)
    counts = set_trainable(module, _part, config)
    module.train()
    encoder = VilaEncoder(tokenizer, template, config.data.max_length, _ImagePrep(vila))
    info = recipe_info("vila", root, counts, dtype, template=template)

    def save_adapter(state: dict[str, Any], folder: Path) -> None:
        export.save_peft_adapter(vila.llm, export.sub_state(state, "vila.llm."), folder)

    return Recipe(
        module=module,
        encode=encoder,
        collate=partial(collate_vila, pad_id=pad_token_id(tokenizer)),
        export=partial(
            export.export_vila,
            base=root,
            lora_scaling=scaling,
            dtype=config.export.dtype,
            info=info,
        ),
        save_adapter=save_adapter if config.lora.enabled else None,
        info=info,
    )
