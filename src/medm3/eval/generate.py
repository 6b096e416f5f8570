"""Generating one batch of an eval run: shared by the local loop and remote workers.

:class:`BatchGenerator` holds the backend (and the CXR expert for runs with
experts) and turns one batch -- fixed sample slice, seed ``seed + start`` --
into prediction records. The local runner calls it in process; with
``--executor ray`` every actor builds one from a :class:`BackendRef` (the VLM
is loaded once per actor and stays warm) and the driver writes the records in
batch order, so ``predictions.jsonl`` holds the same lines either way.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from medm3.errors import InputError, MedM3Error
from medm3.eval.samples import Sample, load_pil
from medm3.eval.tasks import Task
from medm3.vlm.base import GenerationConfig, VLMBackend

__all__ = ["EXPERT_ENSEMBLE", "EXPERT_THRESHOLD", "BackendRef", "BatchGenerator", "expert_lines"]

#: Ensemble of the CXR expert in the "with expert" classification runs.
EXPERT_ENSEMBLE = "reference"
#: Strict probability threshold of the expert's "yes" lines.
EXPERT_THRESHOLD = 0.5


@dataclass(frozen=True)
class BackendRef:
    """A backend to load in a worker process: ``load_backend(name, model, **options)``.

    Attributes:
        name: Backend name as the backend reports it (in the log).
        model_id: Hub id, folder or served model.
        options: Backend constructor options (device, dtype ...).
        expert_device: Device of the CXR expert (runs with experts).
        key: Registry name to load it by (default: ``name``).
    """

    name: str
    model_id: str
    options: dict[str, Any] = field(default_factory=dict)
    expert_device: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class Batch:
    """One batch: the index of its first sample and the ``(index, sample)`` pairs to generate."""

    start: int
    items: list[tuple[int, Sample]]


class BatchGenerator:
    """Generates the prediction records of batches (see the module docstring).

    Args:
        task: The task.
        protocol: Its protocol.
        experts: Give the CXR expert's findings.
        generation: Decoding settings (the seed is set per batch).
        seed: Base seed.
        backend: A loaded backend, or a :class:`BackendRef` to load here.
        expert: The CXR expert (default: the registry's, loaded when needed).
    """

    def __init__(
        self,
        task: Task,
        protocol: str,
        experts: bool,
        generation: GenerationConfig,
        seed: int,
        backend: VLMBackend | BackendRef,
        expert: Any = None,
    ) -> None:
        self.task = task
        self.protocol = protocol
        self.experts = experts
        self.generation = generation
        self.seed = int(seed)
        if isinstance(backend, BackendRef):
            from medm3.vlm.registry import load_backend

            if experts and expert is None:
                from medm3.experts.registry import get_expert

                expert = get_expert("cxr", device=backend.expert_device)
            backend = load_backend(backend.key or backend.name, backend.model_id, **backend.options)
        elif experts and expert is None:
            from medm3.experts.registry import get_expert

            expert = get_expert("cxr")
        self.backend = backend
        self.expert = expert
        self.expert_cache: dict[str, dict[str, float]] = {}

    def __call__(self, batch: Batch) -> tuple[list[dict[str, Any]], float]:
        """The records of one batch and the seconds its generation took.

        Raises:
            MedM3Error: The backend returned another number of answers.
        """
        samples = [s for _, s in batch.items]
        lines = expert_lines(self.experts, samples, self.expert, self.expert_cache)
        images: dict[str, Any] = {}
        conversations = []
        texts = []
        for s in samples:
            key = s.image_key or s.id
            if key not in images:
                images[key] = load_pil(s.image)
            given = lines.get(s.image_key) if self.experts else None
            conversations.append(self.task.messages(s, images[key], self.protocol, given))
            texts.append(self.task.prompt_text(s, self.protocol, given))
        config = replace(self.generation, seed=self.seed + batch.start)
        t0 = time.perf_counter()
        outputs = self.backend.generate_batch(conversations, config)
        elapsed = time.perf_counter() - t0
        if len(outputs) != len(samples):
            raise MedM3Error(
                f"backend '{self.backend.name}' returned {len(outputs)} answers for "
                f"{len(samples)} conversations"
            )
        records = []
        for (index, s), out, text in zip(batch.items, outputs, texts, strict=True):
            record: dict[str, Any] = {
                "question_id": s.id,
                "text": out.text,
                "index": index,
                "prompt": text,
                "finish_reason": out.finish_reason,
                "completion_tokens": out.completion_tokens,
                "seconds": elapsed / len(samples),
                "model_id": self.backend.model_id,
            }
            if self.experts:
                record["expert"] = self.expert_cache.get(s.image_key, {})
            records.append(record)
        return records, elapsed

    def close(self) -> None:
        """Close the backend."""
        self.backend.close()


def expert_lines(
    experts: bool,
    batch: Sequence[Sample],
    expert: Any,
    cache: dict[str, dict[str, float]],
) -> Mapping[str, str]:
    """The expert block per image key of the batch (probabilities computed once per image)."""
    if not experts:
        return {}
    from medm3 import prompts

    todo: dict[str, Sample] = {}
    for s in batch:
        if s.image_key not in cache and s.image_key not in todo:
            todo[s.image_key] = s
    if todo:
        from medm3.imaging.io import load_image

        images = []
        for s in todo.values():
            if not isinstance(s.image, Path):
                raise InputError(f"sample {s.id}: the CXR expert needs an image file")
            images.append(load_image(s.image, "XR"))
        results = expert.predict_batch(images, ensemble=EXPERT_ENSEMBLE)
        for key, probabilities in zip(todo, results, strict=True):
            cache[key] = {k: float(v) for k, v in probabilities.items()}
    return {
        s.image_key: prompts.cxr_expert_lines(cache[s.image_key], EXPERT_THRESHOLD) for s in batch
    }
