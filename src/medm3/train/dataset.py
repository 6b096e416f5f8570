"""LLaVA JSON rows -> conversations -> tokenised training examples.

Rows are read with :func:`medm3.data.llava.read_rows` (the format the builders
write). Each row becomes a list of :class:`~medm3.vlm.base.Message` exactly as
the agent builds them at inference: ``human`` -> ``user``, ``gpt`` ->
``assistant``, and each ``<image>`` in a human turn an
:class:`~medm3.vlm.base.ImagePart` at that position (split with
:func:`medm3.prompts.split_images`), images consumed in row order. Rendering
and tokenisation are the model kind's encoder (:mod:`medm3.train.vila_sft`,
:mod:`medm3.train.hf_sft`), so training text is what inference renders.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medm3 import prompts
from medm3.errors import InputError
from medm3.vlm.base import ImagePart, Message, TextPart

logger = logging.getLogger(__name__)

#: Label value ignored by the loss.
IGNORE_INDEX = -100
ROLES = {"human": "user", "gpt": "assistant"}


@dataclass(frozen=True)
class Sample:
    """One training conversation before image loading.

    Attributes:
        id: Row id.
        turns: ``(role, text)`` with roles ``user`` / ``assistant``; text keeps
            its ``<image>`` placeholders.
        images: Absolute image paths in placeholder order.
    """

    id: str
    turns: tuple[tuple[str, str], ...]
    images: tuple[Path, ...]


def read_samples(
    files: Sequence[str | os.PathLike[str]], image_folder: str | os.PathLike[str] | None = None
) -> list[Sample]:
    """Read LLaVA JSON files into samples, checking that every image exists.

    Args:
        files: JSON files (lists of rows); several files are concatenated in order.
        image_folder: Resolve image paths against this folder instead of each
            file's own folder.

    Returns:
        The samples, in file order.

    Raises:
        InputError: A missing/invalid file, a bad row, no rows at all, or
            missing images (the first one and how many are named).
    """
    from medm3.data.llava import read_rows, row_images

    samples: list[Sample] = []
    missing: list[Path] = []
    for name in files:
        file = Path(name)
        rows = read_rows(file)
        base = Path(image_folder) if image_folder else file.parent
        for row in rows:
            images = tuple((base / p).resolve() for p in row_images(row))
            missing.extend(p for p in images if not p.is_file())
            turns = tuple((ROLES[t["from"]], t["value"]) for t in row["conversations"])
            samples.append(Sample(str(row["id"]), turns, images))
    if missing:
        raise InputError(
            f"{len(missing)} training image(s) not found, e.g. {missing[0]} (image paths are "
            "relative to the JSON file's folder, or to data.image_folder)"
        )
    if not samples:
        raise InputError(f"no training rows in {', '.join(str(f) for f in files)}")
    return samples


def to_messages(sample: Sample, images: Sequence[Any]) -> list[Message]:
    """The conversation as :class:`Message` objects, the way the agent builds them.

    Args:
        sample: The sample.
        images: One image object per placeholder (PIL images for training; any
            object works for text rendering).

    Raises:
        InputError: Placeholders and images disagree.
    """
    pics = iter(images)
    messages: list[Message] = []
    for role, text in sample.turns:
        parts: list[Any] = []
        for piece in prompts.split_images(text):
            if piece is None:
                try:
                    parts.append(ImagePart(next(pics)))
                except StopIteration:
                    raise InputError(f"row {sample.id}: more <image> tokens than images") from None
            else:
                parts.append(TextPart(piece))
        messages.append(Message(role, parts))  # type: ignore[arg-type]
    if next(pics, None) is not None:
        raise InputError(f"row {sample.id}: more images than <image> tokens")
    return messages


def load_image(path: Path) -> Any:
    """Open an image file as RGB (PIL).

    Raises:
        InputError: The file cannot be read as an image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"cannot read image: {exc}", path) from None


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two id lists."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def spans_to_labels(
    ids: Sequence[int],
    spans: Sequence[tuple[int, int]],
    tokenize: Callable[[int], Sequence[int]],
) -> list[int]:
    """Labels of ``ids``: the tokens of the character spans, ``-100`` elsewhere.

    The token boundary of a character position ``p`` is where the ids of the
    text prefix ``[:p]`` stop agreeing with ``ids``. A token that straddles a
    span start (e.g. ``"▁Yes"`` after ``"ASSISTANT:"``) is therefore labelled,
    one that straddles a span end is not.

    Args:
        ids: Token ids of the whole text.
        spans: ``(start, end)`` character spans to learn (assistant answers).
        tokenize: Maps a character position ``p`` to the ids of the text ``[:p]``,
            tokenised exactly as ``ids`` was.

    Returns:
        One label per id.
    """
    labels = [IGNORE_INDEX] * len(ids)
    for start_char, end_char in spans:
        start = common_prefix(ids, tokenize(start_char))
        end = common_prefix(ids, tokenize(end_char))
        labels[start:end] = ids[start:end]
    return labels


class ConversationDataset:
    """Map-style dataset: sample -> load images -> messages -> ``encode`` -> example dict.

    Args:
        samples: From :func:`read_samples`.
        encode: The model kind's encoder (messages -> dict of tensors/lists).
    """

    def __init__(self, samples: Sequence[Sample], encode: Callable[[list[Message]], dict]) -> None:
        self.samples = list(samples)
        self.encode = encode

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        images = [load_image(p) for p in sample.images]
        try:
            return self.encode(to_messages(sample, images))
        except InputError as exc:
            raise InputError(f"row {sample.id}: {exc.message}", exc.path) from None
