"""The tiny VILA in float16 and bfloat16 on the CPU: no dtype mismatch on any decoding path.

The reference runs everything in fp16 (weights stored in bf16, images cast to
fp16). Vision tower, projector, image features, spliced embeddings and the
LLM must agree on the dtype; results stay close to float32.
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")

from PIL import Image  # noqa: E402

from medm3.testing import build_tiny_vila  # noqa: E402
from medm3.vlm.base import GenerationConfig, ImagePart, Message, TextPart  # noqa: E402
from medm3.vlm.vila import VilaBackend  # noqa: E402

TEMPLATES = ["llama_3", "vicuna_v1"]
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
TOLERANCE = {"float16": 0.01, "bfloat16": 0.05}  # of the largest float32 logit


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    return {t: build_tiny_vila(tmp_path_factory.mktemp(t), t) for t in TEMPLATES}


@pytest.fixture(scope="module")
def reference(checkpoints) -> dict[str, VilaBackend]:
    return {t: VilaBackend(str(p), device="cpu", dtype="float32") for t, p in checkpoints.items()}


@pytest.fixture(scope="module", params=[(t, d) for t in TEMPLATES for d in DTYPES])
def low(request, checkpoints) -> VilaBackend:
    template, dtype = request.param
    return VilaBackend(str(checkpoints[template]), device="cpu", dtype=dtype)


def conversation(seed: int = 0) -> list[Message]:
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (37, 50, 3), generator=gen, dtype=torch.uint8).numpy()
    return [Message("user", [ImagePart(Image.fromarray(pixels)), TextPart("What is this?")])]


def last_logits(backend: VilaBackend, messages: list[Message]) -> torch.Tensor:
    ((prompt, _),) = backend.prepare([messages])
    with torch.inference_mode():
        return backend.model.llm(inputs_embeds=prompt.embeds[None]).logits[0, -1]


def test_every_part_runs_in_the_requested_dtype(low) -> None:
    dtype = low.dtype
    model = low.model
    for part in (model.vision_tower, model.projector, model.llm):
        assert {p.dtype for p in part.parameters()} == {dtype}
    pixels = model.preprocess([conversation()[0].content[0].image])
    assert pixels.dtype == torch.float32  # cast to the tower's dtype inside
    assert model.encode_images(pixels).dtype == dtype
    ((prompt, _),) = low.prepare([conversation()])
    assert prompt.embeds.dtype == dtype
    embeds, mask = model.pad_batch([prompt, prompt])
    assert embeds.dtype == dtype and mask.dtype == torch.long


def test_logits_are_finite_and_close_to_float32(low, reference) -> None:
    name = str(low.dtype).removeprefix("torch.")
    ref = last_logits(reference[low.template], conversation(1))
    out = last_logits(low, conversation(1))
    assert out.dtype == low.dtype and torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() <= TOLERANCE[name] * ref.abs().max()


def test_generate_stream_and_batch_agree(low) -> None:
    config = GenerationConfig(max_new_tokens=8)
    messages = conversation(2)
    single = low.generate(messages, config)
    assert single.completion_tokens == 8 and single.text
    assert "".join(low.stream(messages, config)) == single.text
    text_only = [Message("user", [TextPart("Hello there")])]
    batch = low.generate_batch([messages, text_only], config)
    assert batch[0].text == single.text
    assert batch[1].text == low.generate(text_only, config).text


def test_mixed_dtypes_are_cast_at_each_boundary(checkpoints) -> None:
    """A float32 vision tower in front of a float16 projector and LLM still splices fp16."""
    backend = VilaBackend(str(checkpoints["vicuna_v1"]), device="cpu", dtype="float16")
    backend.model.vision_tower.float()
    out = backend.generate(conversation(3), GenerationConfig(max_new_tokens=3))
    assert out.completion_tokens == 3
    ((prompt, _),) = backend.prepare([conversation(3)])
    assert prompt.embeds.dtype == torch.float16
