"""Generation stops on the conversation separator, as VILA's run_vila.py and the M3 demo.

The reference (``llava/eval/run_vila.py``, ``m3/demo/gradio_m3.py``) stops on
``stop_str = conv.sep`` (``<|eot_id|>`` for ``llama_3``) or ``conv.sep2``
(``</s>`` for ``vicuna_v1``) through ``KeywordsStoppingCriteria``, whose ids are
``tokenizer(stop_str).input_ids`` without the BOS. A tiny model is forced to
emit that id (lm_head biased) in single, streamed and batched generation.
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

SEPARATORS = {"llama_3": "<|eot_id|>", "vicuna_v1": "</s>"}


@pytest.fixture(scope="module", params=sorted(SEPARATORS))
def backend(request, tmp_path_factory) -> VilaBackend:
    root: Path = build_tiny_vila(tmp_path_factory.mktemp(request.param), request.param)
    return VilaBackend(str(root), device="cpu")


def separator_id(backend: VilaBackend) -> int:
    """The id KeywordsStoppingCriteria derives from the template's separator."""
    ids = backend.tokenizer(SEPARATORS[backend.template]).input_ids
    if len(ids) > 1 and ids[0] == backend.tokenizer.bos_token_id:
        ids = ids[1:]
    assert len(ids) == 1
    return ids[0]


class ForcePerRow:
    """lm_head hook: batch row ``r`` is forced to emit ``token`` at step ``at[r]``."""

    def __init__(self, backend: VilaBackend, token: int, at: list[int]) -> None:
        self.token, self.at, self.step = token, at, 0
        self.handle = backend.model.llm.lm_head.register_forward_hook(self)

    def __call__(self, module, args, output):
        output = output.clone()
        for row, step in enumerate(self.at[: output.shape[0]]):
            if step == self.step:
                output[row, -1, self.token] = 1e4
        self.step += 1
        return output

    def __enter__(self) -> ForcePerRow:
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


def ask(text: str, image: bool = False) -> list[Message]:
    parts = [ImagePart(Image.new("RGB", (10, 12), (9, 99, 199)))] if image else []
    return [Message("user", [*parts, TextPart(text)])]


def test_separator_is_a_stop_id(backend) -> None:
    assert separator_id(backend) in backend.stop_ids
    assert backend.model.llm.generation_config.eos_token_id == backend.stop_ids


def test_generate_and_stream_stop_on_the_separator(backend) -> None:
    sep = separator_id(backend)
    messages = ask("What is this?", image=True)
    config = GenerationConfig(max_new_tokens=20)
    before = backend.generate(messages, GenerationConfig(max_new_tokens=5))
    with ForcePerRow(backend, sep, [5]):
        out = backend.generate(messages, config)
    assert (out.finish_reason, out.completion_tokens, out.text) == ("stop", 6, before.text)
    with ForcePerRow(backend, sep, [5]):
        assert "".join(backend.stream(messages, config)) == before.text


def test_batched_rows_stop_on_their_own_separator(backend) -> None:
    """Rows hit the separator at different steps; each stops there, the others go on."""
    sep = separator_id(backend)
    # Increasing prompt lengths: generate_batch keeps this order inside the batch.
    conversations = [ask("Hi"), ask("Is there a tumor in the liver?"), ask("Describe it. " * 6)]
    at = [2, 6, 30]  # the last row never meets it within max_new_tokens
    config = GenerationConfig(max_new_tokens=12)
    with ForcePerRow(backend, sep, at):
        batch = backend.generate_batch(conversations, config)
    free = [
        backend.generate(c, GenerationConfig(max_new_tokens=s))
        for c, s in zip(conversations, [2, 6, 12], strict=True)
    ]
    assert [b.text for b in batch] == [f.text for f in free]
    assert [(b.finish_reason, b.completion_tokens) for b in batch] == [
        ("stop", 3),
        ("stop", 7),
        ("length", 12),
    ]
    for item in batch:
        assert SEPARATORS[backend.template] not in item.text
