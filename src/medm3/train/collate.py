"""Batching of training examples, and the masked causal-LM loss.

Sequences are right-padded (labels with ``-100``). Image tensors are
concatenated along their first axis: each model consumes its images in batch
order (VILA at its sentinels, HF models at their image tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from medm3.train.dataset import IGNORE_INDEX

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: Example keys that are per-token sequences (padded), with their padding value.
SEQUENCE_PADS = {"attention_mask": 0, "labels": IGNORE_INDEX}


def _pad(rows: Sequence[Any], value: int) -> torch.Tensor:
    import torch

    tensors = [torch.as_tensor(r, dtype=torch.long) for r in rows]
    longest = max(t.shape[0] for t in tensors)
    out = torch.full((len(tensors), longest), value, dtype=torch.long)
    for i, t in enumerate(tensors):
        out[i, : t.shape[0]] = t
    return out


def collate_vila(examples: Sequence[dict[str, Any]], pad_id: int) -> dict[str, Any]:
    """Batch VILA examples: ``input_ids`` (sentinels kept), ``attention_mask``, ``labels``,
    ``pixel_values`` (all images of the batch, in order, or ``None``)."""
    import torch

    ids = [e["input_ids"] for e in examples]
    pixels = [e["pixel_values"] for e in examples if e.get("pixel_values") is not None]
    return {
        "input_ids": _pad(ids, pad_id),
        "attention_mask": _pad([[1] * len(i) for i in ids], 0),
        "labels": _pad([e["labels"] for e in examples], IGNORE_INDEX),
        "pixel_values": torch.cat(pixels) if pixels else None,
    }


def collate_hf(
    examples: Sequence[dict[str, Any]], pad_id: int, sequence_keys: Sequence[str]
) -> dict[str, Any]:
    """Batch processor outputs: per-token keys padded right, image tensors concatenated.

    Args:
        examples: Dicts of 1-D per-token tensors (``input_ids``, ``labels``,
            ``attention_mask``, ``token_type_ids`` ...) and image tensors.
        pad_id: Padding id of ``input_ids``.
        sequence_keys: Keys holding per-token values.
    """
    import torch

    batch: dict[str, Any] = {}
    keys = {k for e in examples for k in e}
    for key in sorted(keys):
        if key in sequence_keys:
            value = pad_id if key == "input_ids" else SEQUENCE_PADS.get(key, 0)
            batch[key] = _pad([e[key] for e in examples], value)
        else:
            parts = [e[key] for e in examples if e.get(key) is not None]
            batch[key] = torch.cat(parts) if parts else None
    return {k: v for k, v in batch.items() if v is not None}


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled positions (fp32).

    A batch without any labelled position gives a zero loss that still
    depends on ``logits`` (so every process runs the same backward).
    """
    import torch.nn.functional as F

    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:].to(shift_logits.device)
    count = (shift_labels != IGNORE_INDEX).sum()
    total = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]),
        shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return total / count.clamp(min=1)
