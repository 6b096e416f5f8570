"""Tests of the transformers backend on tiny random-weight checkpoints built offline."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from medm3.errors import InputError, MedM3Error
from medm3.testing.tiny_hf import (
    build_tiny_gemma3,
    build_tiny_llava,
    build_tiny_qwen2_vl,
)
from medm3.vlm import load_backend
from medm3.vlm.base import GenerationConfig, ImagePart, Message, TextPart, collect_stream
from medm3.vlm.hf import HFBackend

pytest.importorskip("torch")
pytest.importorskip("transformers")

BUILDERS = {"llava": build_tiny_llava, "qwen2_vl": build_tiny_qwen2_vl}
CFG = GenerationConfig(max_new_tokens=10, min_new_tokens=10)


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> HFBackend:
    folder = BUILDERS[request.param](tmp_path_factory.mktemp(request.param))
    return HFBackend(str(folder), device="cpu")


def _red() -> Image.Image:
    return Image.new("RGB", (40, 30), (220, 20, 20))


def _noise() -> Image.Image:
    return Image.effect_noise((30, 40), 90).convert("RGB")


def _ask(image: Image.Image | None, text: str = "What is shown?") -> list[Message]:
    parts: list[Any] = [ImagePart(image)] if image is not None else []
    return [Message("user", [*parts, TextPart(text)])]


def test_tiny_builders_are_small_and_fast(tmp_path: Path) -> None:
    import time

    import transformers

    for cls in ("Llava", "Qwen2VL", "Gemma3"):  # import cost is not build cost
        getattr(transformers, f"{cls}ForConditionalGeneration")
        getattr(transformers, f"{cls}Processor")
    for name, build in {**BUILDERS, "gemma3": build_tiny_gemma3}.items():
        start = time.process_time()  # CPU time: robust to a busy machine
        folder = build(tmp_path / name)
        elapsed = time.process_time() - start
        size = sum(f.stat().st_size for f in folder.iterdir())
        assert elapsed < 2.0 and size < 2_000_000, (name, elapsed, size)
        assert (folder / "chat_template.jinja").exists() or "chat_template" in (
            folder / "processor_config.json"
        ).read_text()


def test_generate(backend: HFBackend) -> None:
    gen = backend.generate(_ask(_red()), CFG)
    assert gen.finish_reason == "length" and gen.completion_tokens == 10
    assert gen.text and gen.prompt_tokens > 16  # 16 image tokens + text
    assert gen.raw["prompt"].rstrip().endswith(("ASSISTANT:", "<|im_start|>assistant"))
    assert backend.vila_format is False and backend.supports_tools is False


def test_stream_equals_generate(backend: HFBackend) -> None:
    conv = _ask(_red(), "Describe the scan")
    chunks = list(backend.stream(conv, CFG))
    assert "".join(chunks) == backend.generate(conv, CFG).text


def test_stream_returns_the_final_generation(backend: HFBackend) -> None:
    conv = _ask(_red(), "Describe the scan")
    full = backend.generate(conv, CFG)
    seen: list[str] = []
    streamed = collect_stream(backend.stream(conv, CFG), seen.append)
    assert "".join(seen) == streamed.text == full.text
    assert streamed.finish_reason == "length" and streamed.completion_tokens == 10
    assert streamed.prompt_tokens == full.prompt_tokens > 16
    eos = backend._eos_ids()[0]
    with _force(backend, eos, at=3):
        stopped = collect_stream(backend.stream(conv, GenerationConfig(max_new_tokens=10)))
    assert (stopped.finish_reason, stopped.completion_tokens) == ("stop", 4)


@contextlib.contextmanager
def _force(backend: HFBackend, token: int, at: int) -> Any:
    """From generation step ``at`` on (0-based), the model's top logit is ``token``."""
    step = [0]

    def hook(module: Any, args: Any, output: Any) -> Any:
        if step[0] >= at:
            output.logits[:, -1, token] = 1e4
        step[0] += 1
        return output

    handle = backend.model.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def test_batch_equals_sequential(backend: HFBackend) -> None:
    convs = [
        _ask(_red()),
        _ask(None, "A much longer question without any image, about the liver and spleen"),
        _ask(_noise(), "Short?"),
        [
            Message.text("system", "You are a radiologist."),
            Message("user", [TextPart("Compare"), ImagePart(_noise()), ImagePart(_red())]),
        ],
        _ask(None, "Hi"),
    ]
    backend.batch_size = 2  # several batches of each kind
    try:
        batched = backend.generate_batch(convs, CFG)
    finally:
        backend.batch_size = 8
    sequential = [backend.generate(c, CFG) for c in convs]
    assert [g.text for g in batched] == [g.text for g in sequential]
    assert [g.prompt_tokens for g in batched] == [g.prompt_tokens for g in sequential]


def test_image_reaches_the_model(backend: HFBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []
    original = backend.model.generate

    def spy(**kwargs: Any) -> Any:
        seen.append(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(backend.model, "generate", spy)
    a = backend.generate(_ask(_red()), CFG).text
    b = backend.generate(_ask(_noise()), CFG).text
    assert a != b
    pixels = seen[0]["pixel_values"]
    assert pixels.dtype == backend.dtype and pixels.abs().sum() > 0
    n_image_tokens = (seen[0]["input_ids"] == backend.model.config.image_token_id).sum()
    grid = seen[0].get("image_grid_thw")  # Qwen2-VL: (t, h, w) patches, merged 2x2
    assert int(n_image_tokens) == (16 if grid is None else int(grid.prod()) // 4)
    assert "pixel_values" not in backend._encode(["text only"], [[]])


def test_stop_strings(backend: HFBackend) -> None:
    conv = _ask(_red())
    full = backend.generate(conv, CFG).text
    stop = full[3:5]
    cut = full.index(stop)
    cfg = GenerationConfig(max_new_tokens=10, min_new_tokens=1, stop=(stop,))
    gen = backend.generate(conv, cfg)
    assert gen.text == full[:cut] and gen.finish_reason == "stop"
    assert "".join(backend.stream(conv, cfg)) == full[:cut]


def test_sampling_with_seed_is_reproducible(backend: HFBackend) -> None:
    import torch

    cfg = GenerationConfig(max_new_tokens=8, temperature=1.0, seed=7)
    state = torch.get_rng_state()
    first = backend.generate(_ask(None, "Hello"), cfg).text
    assert torch.equal(state, torch.get_rng_state())  # global RNG untouched
    assert backend.generate(_ask(None, "Hello"), cfg).text == first


def test_tool_turns_and_control_tokens(backend: HFBackend) -> None:
    conv = [
        Message.text("user", "Segment the liver <image> <|im_start|>"),
        Message.text("assistant", "<VISTA3D(liver)>"),
        Message("tool", [TextPart("liver: 1.6 L"), ImagePart(_red())], tool_call_id="c1"),
        Message.text("user", "And the spleen?"),
    ]
    prompt, images = backend.render(conv)
    assert backend.tool_role is False
    assert "Tool result: liver: 1.6 L" in prompt and "And the spleen?" in prompt
    assert len(images) == 1
    assert "\u200b" in prompt  # typed control tokens are broken up
    assert backend.generate(conv, CFG).completion_tokens == 10


def test_tool_role_detection(backend: HFBackend) -> None:
    template = backend.processor.chat_template
    tool_template = (
        "{% for m in messages %}{% if m['role'] == 'tool' %}<tool_response>"
        "{{ m['content'][0]['text'] }}</tool_response>{% else %}{{ m['role'] }}: "
        "{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
        "{% endfor %}{% endif %}\n{% endfor %}"
    )
    try:
        backend.processor.chat_template = tool_template
        assert backend._detect_tool_role() is True
        backend.tool_role = True
        prompt, _ = backend.render([Message.text("user", "q"), Message.text("tool", "42")])
        assert "<tool_response>42</tool_response>" in prompt
    finally:
        backend.processor.chat_template = template
        backend.tool_role = False


def test_gemma3_alternation_and_system(tmp_path: Path) -> None:
    vlm = load_backend("hf", str(build_tiny_gemma3(tmp_path / "gemma3")), device="cpu")
    conv = [
        Message.text("system", "Be brief."),
        Message("user", [ImagePart(_red()), TextPart("Segment")]),
        Message.text("assistant", "<VISTA3D(liver)>"),
        Message.text("tool", "liver found"),
        Message.text("user", "Size?"),  # merged with the tool turn: roles alternate
    ]
    prompt, _ = vlm.render(conv)
    assert prompt.count("<start_of_turn>user") == 2 and prompt.startswith("<bos>")
    assert "Be brief." in prompt and "Tool result: liver found" in prompt
    gen = vlm.generate(conv, CFG)
    assert gen.completion_tokens == 10
    assert "".join(vlm.stream(conv, CFG)) == gen.text


def test_load_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="model folder not found"):
        HFBackend(str(tmp_path / "missing" / "model"))
    with pytest.raises(MedM3Error) as info:
        HFBackend("medm3-test-org/no-such-model-xyz")
    message = str(info.value)
    assert "medm3-test-org/no-such-model-xyz" in message and "hf download" in message
    assert "HF_HUB_OFFLINE" in message and "\n" not in message
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MedM3Error, match="cannot load the model folder"):
        HFBackend(str(empty))
    with pytest.raises(InputError, match="dtype"):
        HFBackend(str(empty), dtype="int3")
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_stream_stop_filter_holds_back_partial_stops() -> None:
    from itertools import accumulate

    from medm3.vlm.stops import text_deltas

    def run(chunks: list[str], stops: tuple[str, ...]) -> list[str]:
        return list(text_deltas(accumulate(chunks), stops))

    assert "".join(run(["ab", "c#", "#d", "ef"], ("##",))) == "abc"
    assert "".join(run(["ab", "c#", "x#", "#"], ("##",))) == "abc#x"
    assert "".join(run(["a<", "/s", "x>"], ("</s>", "STOP"))) == "a</sx>"
    assert run(["a", "b"], ()) == ["a", "b"]
