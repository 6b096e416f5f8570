"""The vila backend end to end on tiny random-weight checkpoints in the released layout."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")

from PIL import Image  # noqa: E402

from medm3.errors import InputError, MedM3Error  # noqa: E402
from medm3.testing import build_tiny_vila  # noqa: E402
from medm3.vlm.base import GenerationConfig, ImagePart, Message, TextPart, collect_stream  # noqa: E402
from medm3.vlm.vila import IMAGE_TOKEN_INDEX, VilaBackend, tokenize_prompt  # noqa: E402

TEMPLATES = ["llama_3", "vicuna_v1"]
SHORT = GenerationConfig(max_new_tokens=12)


def make_image(seed: int, size: tuple[int, int] = (50, 37)) -> Image.Image:
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=gen, dtype=torch.uint8)
    return Image.fromarray(pixels.numpy())


def ask(text: str, *images: Image.Image) -> list[Message]:
    return [Message("user", [*(ImagePart(i) for i in images), TextPart(text)])]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    return {t: build_tiny_vila(tmp_path_factory.mktemp(t), t) for t in TEMPLATES}


@pytest.fixture(scope="module")
def backends(checkpoints) -> dict[str, VilaBackend]:
    return {t: VilaBackend(str(p), device="cpu") for t, p in checkpoints.items()}


@pytest.fixture(params=TEMPLATES)
def backend(request, backends) -> VilaBackend:
    return backends[request.param]


class ForceToken:
    """lm_head hook: from generation step ``at`` on, token ``token`` wins."""

    def __init__(self, backend: VilaBackend, token: int, at: int) -> None:
        self.token, self.at, self.step = token, at, 0
        self.handle = backend.model.llm.lm_head.register_forward_hook(self)

    def __call__(self, module, args, output):
        if self.step >= self.at:
            output = output.clone()
            output[:, -1, self.token] = 1e4
        self.step += 1
        return output

    def __enter__(self) -> ForceToken:
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


# -- build_tiny_vila -------------------------------------------------------------------------
@pytest.mark.parametrize("template", TEMPLATES)
def test_tiny_checkpoint_layout(tmp_path, template, checkpoints) -> None:
    from safetensors import safe_open

    start = time.perf_counter()  # torch/transformers already imported by ``checkpoints``
    root = build_tiny_vila(tmp_path / "ckpt", template)
    assert time.perf_counter() - start < 2.0
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    assert size < 2_000_000
    config = json.loads((root / "config.json").read_text())
    assert config["model_type"] == "llava_llama"
    assert config["mm_vision_select_layer"] == -2
    assert config["mm_vision_select_feature"] == "cls_patch"
    assert config["image_aspect_ratio"] == "resize"
    assert config["mm_use_im_start_end"] is False
    vision = json.loads((root / "vision_tower" / "config.json").read_text())
    assert (vision["image_size"] // vision["patch_size"]) % 2 == 1  # odd grid
    proj = json.loads((root / "mm_projector" / "config.json").read_text())
    assert proj["model_type"] == "v2l_projector"
    assert proj["mm_projector_type"] == "mlp_downsample"
    with safe_open(str(root / "mm_projector" / "model.safetensors"), "pt") as f:
        assert sorted(f.keys()) == [
            f"layers.{i}.{k}" for i in (1, 2, 4) for k in ("bias", "weight")
        ]
    tokenizer_file = "tokenizer.json" if template == "llama_3" else "tokenizer.model"
    assert (root / "llm" / tokenizer_file).is_file()
    assert (root / "llm" / "generation_config.json").is_file()
    assert (root / "vision_tower" / "preprocessor_config.json").is_file()


# -- loading ------------------------------------------------------------------------------
def test_loads_layout_and_detects_template(backends) -> None:
    for template, backend in backends.items():
        assert backend.template == template
        assert backend.dtype == torch.float32 and backend.device.type == "cpu"
        assert backend.vila_format is True
        assert backend.max_length == 4096
        assert type(backend.model.vision_tower).__name__ == "SiglipVisionModel"
        assert type(backend.model.llm).__name__ == "LlamaForCausalLM"


def test_registry_and_template_override(checkpoints) -> None:
    from medm3.vlm import load_backend

    backend = load_backend("vila", str(checkpoints["llama_3"]), device="cpu", dtype="bf16")
    assert isinstance(backend, VilaBackend)
    assert backend.dtype == torch.bfloat16
    assert next(backend.model.projector.parameters()).dtype == torch.bfloat16
    forced = VilaBackend(str(checkpoints["llama_3"]), device="cpu", template="vicuna_v1")
    assert forced.template == "vicuna_v1"
    assert forced.generate(ask("Hi"), GenerationConfig(max_new_tokens=3)).completion_tokens >= 2


def test_shipped_sampling_defaults_are_ignored(checkpoints, backends, tmp_path) -> None:
    """Llama-3 folders ship do_sample/temperature in generation_config.json: greedy stays greedy."""
    copy = tmp_path / "ckpt"
    shutil.copytree(checkpoints["llama_3"], copy)
    path = copy / "llm" / "generation_config.json"
    shipped = json.loads(path.read_text())
    shipped.update(do_sample=True, temperature=0.6, top_p=0.9, max_length=5)
    path.write_text(json.dumps(shipped))
    messages = ask("What is this?", make_image(20))
    expected = backends["llama_3"].generate(messages, SHORT)
    assert VilaBackend(str(copy), device="cpu").generate(messages, SHORT).text == expected.text


def test_package_import_stays_lazy() -> None:
    code = (
        "import sys, medm3, medm3.vlm, medm3.cli.main; "
        "assert 'medm3.vlm.vila' not in sys.modules, 'vila imported eagerly'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_folder_and_bad_layout(checkpoints, tmp_path) -> None:
    with pytest.raises(InputError, match="checkpoint folder not found"):
        VilaBackend(str(tmp_path / "nope"), device="cpu")
    broken = tmp_path / "broken"
    shutil.copytree(checkpoints["llama_3"], broken)
    shutil.rmtree(broken / "mm_projector")
    with pytest.raises(InputError, match=r"missing mm_projector/") as info:
        VilaBackend(str(broken), device="cpu")
    assert "\n" not in str(info.value)
    (broken / "config.json").write_text(json.dumps({"model_type": "llava"}))
    shutil.copytree(checkpoints["llama_3"] / "mm_projector", broken / "mm_projector")
    with pytest.raises(InputError, match="expected 'llava_llama'"):
        VilaBackend(str(broken), device="cpu")


def test_hub_id_offline_gives_one_clear_error(tmp_path, monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(MedM3Error) as info:
        VilaBackend("MONAI/Llama3-VILA-M3-8B", device="cpu", cache_dir=str(tmp_path))
    message = str(info.value)
    assert "\n" not in message
    for part in ("MONAI/Llama3-VILA-M3-8B", str(tmp_path), "--model"):
        assert part in message
    assert "huggingface-cli download MONAI/Llama3-VILA-M3-8B" in message


# -- vision path ----------------------------------------------------------------------------
def test_preprocessing_matches_hand_computation(backends) -> None:
    import numpy as np

    model = backends["llama_3"].model
    image = make_image(1, (53, 31)).convert("L")  # grey: must become RGB
    side = model.vision_tower.config.image_size
    pixel_values = model.preprocess([image])
    rgb = image.convert("RGB").resize((side, side), Image.BICUBIC)
    expected = (np.asarray(rgb, dtype=np.float32) / 255.0 - 0.5) / 0.5
    expected = torch.from_numpy(expected).permute(2, 0, 1)[None]
    assert pixel_values.shape == (1, 3, side, side)
    torch.testing.assert_close(pixel_values, expected, atol=1e-6, rtol=0)


def test_pad_aspect_ratio_pads_to_square_with_mean_colour(backends) -> None:
    import dataclasses

    model = backends["llama_3"].model
    saved = model.config
    model.config = dataclasses.replace(saved, image_aspect_ratio="pad")
    try:
        wide = Image.new("RGB", (60, 20), (255, 0, 0))
        side = model.vision_tower.config.image_size
        pixel_values = model.preprocess([wide])
    finally:
        model.config = saved
    square = Image.new("RGB", (60, 60), (127, 127, 127))
    square.paste(wide, (0, 20))
    expected = model.preprocess([square])
    assert pixel_values.shape == (1, 3, side, side)
    torch.testing.assert_close(pixel_values, expected)


def test_image_features_are_second_to_last_layer_all_tokens(backends, checkpoints) -> None:
    from safetensors.torch import load_file
    from transformers import SiglipVisionModel

    from .test_vila_projector import reference_downsample

    model = backends["vicuna_v1"].model
    pixel_values = model.preprocess([make_image(2), make_image(3)])
    tower = SiglipVisionModel.from_pretrained(
        str(checkpoints["vicuna_v1"] / "vision_tower"), dtype=torch.float32
    )
    with torch.no_grad():
        hidden = tower(pixel_values=pixel_values, output_hidden_states=True).hidden_states[-2]
    assert hidden.shape[1] == 49  # 7x7, all tokens kept
    w = load_file(str(checkpoints["vicuna_v1"] / "mm_projector" / "model.safetensors"))
    w = {k: v.float() for k, v in w.items()}
    x = reference_downsample(hidden)
    x = torch.nn.functional.layer_norm(x, x.shape[-1:], w["layers.1.weight"], w["layers.1.bias"])
    x = x @ w["layers.2.weight"].T + w["layers.2.bias"]
    x = 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))
    expected = x @ w["layers.4.weight"].T + w["layers.4.bias"]
    features = model.encode_images(pixel_values)
    assert features.shape == (2, 16, model.config.hidden_size)
    torch.testing.assert_close(features, expected, atol=1e-5, rtol=1e-5)


def test_image_features_land_at_the_sentinels(backend) -> None:
    images = [make_image(4), make_image(5)]
    messages = [
        Message("user", [TextPart("Compare"), ImagePart(images[0]), TextPart("and")]),
        Message("user", [ImagePart(images[1]), TextPart("Which?")]),
    ]
    seen = []
    llm_model = backend.model.llm.model
    handle = llm_model.register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw.get("inputs_embeds")), with_kwargs=True
    )
    try:
        backend.generate(messages, GenerationConfig(max_new_tokens=2))
    finally:
        handle.remove()
    embeds = seen[0][0]  # the prefill step; later steps feed input_ids
    assert all(e is None for e in seen[1:])
    ((prompt, text),) = backend.prepare([messages])
    ids = tokenize_prompt(text, backend.tokenizer)
    features = backend.model.encode_images(backend.model.preprocess(images))
    table = backend.model.llm.get_input_embeddings().weight
    position = 0
    image_index = 0
    for token in ids:
        if token == IMAGE_TOKEN_INDEX:
            n = features.shape[1]
            torch.testing.assert_close(embeds[position : position + n], features[image_index])
            assert prompt.image_spans[image_index] == (position, position + n)
            position += n
            image_index += 1
        else:
            assert torch.equal(embeds[position], table[token])
            position += 1
    assert position == embeds.shape[0] == prompt.embeds.shape[0]
    assert image_index == 2


def test_placeholder_image_mismatch_is_an_error(backend) -> None:
    typed = [Message("user", [TextPart("<image>\nWhat is this?"), ImagePart(make_image(6))])]
    with pytest.raises(InputError, match=r"2 <image> placeholder.*1 image"):
        backend.generate(typed, SHORT)
    with pytest.raises(InputError, match=r"1 <image> placeholder.*0 image"):
        backend.generate(ask("<image>\nWhat is this?"), SHORT)


# -- generation -----------------------------------------------------------------------------
def test_generate_returns_text(backend) -> None:
    out = backend.generate(ask("What is this?", make_image(7)), SHORT)
    assert isinstance(out.text, str) and out.text
    assert out.completion_tokens == 12 and out.finish_reason == "length"
    assert (
        out.prompt_tokens
        == out.raw["images"] * 16
        + len(tokenize_prompt(out.raw["prompt"], backend.tokenizer))
        - out.raw["images"]
    )
    assert out.raw["template"] == backend.template


@pytest.mark.parametrize("which", [0, -1])
def test_stops_at_stop_token_and_strips_it(backend, which) -> None:
    stop = backend.stop_ids[which]
    messages = ask("What is this?", make_image(8))
    free = backend.generate(messages, SHORT)
    with ForceToken(backend, stop, at=4):
        out = backend.generate(messages, SHORT)
    assert out.finish_reason == "stop" and out.completion_tokens == 5
    first4 = backend.generate(messages, GenerationConfig(max_new_tokens=4))
    assert out.text == first4.text
    assert free.text.startswith(out.text)
    for marker in ("<|eot_id|>", "<|end_of_text|>", "</s>"):
        assert marker not in out.text


def test_min_new_tokens(backend) -> None:
    stop = backend.stop_ids[0]
    with ForceToken(backend, stop, at=0):
        out = backend.generate(ask("Hi"), GenerationConfig(max_new_tokens=8, min_new_tokens=2))
    assert out.completion_tokens == 3 and out.finish_reason == "stop"


def test_stop_strings(backend) -> None:
    messages = ask("What is this?", make_image(9))
    free = backend.generate(messages, GenerationConfig(max_new_tokens=12))
    half = len(free.text) // 2
    starts = [i for i in range(half, len(free.text) - 1) if free.text[i : i + 2].isascii()]
    stop = free.text[starts[0] : starts[0] + 2] if starts else free.text[half : half + 2]
    out = backend.generate(messages, GenerationConfig(max_new_tokens=12, stop=(stop,)))
    assert out.finish_reason == "stop"
    assert out.text == free.text[: free.text.find(stop)].strip()
    assert out.completion_tokens < 12
    streamed = "".join(backend.stream(messages, GenerationConfig(max_new_tokens=12, stop=(stop,))))
    assert streamed == out.text


def test_stream_concatenation_equals_generate(backend) -> None:
    messages = ask("Describe the image.", make_image(10))
    config = GenerationConfig(max_new_tokens=16)
    deltas = list(backend.stream(messages, config))
    assert len(deltas) > 1
    assert "".join(deltas) == backend.generate(messages, config).text
    with ForceToken(backend, backend.stop_ids[0], at=3):
        stopped = "".join(backend.stream(messages, config))
    assert stopped == backend.generate(messages, GenerationConfig(max_new_tokens=3)).text


def test_stream_returns_the_final_generation(backend) -> None:
    messages = ask("Describe the image.", make_image(10))
    config = GenerationConfig(max_new_tokens=16, min_new_tokens=16)
    full = backend.generate(messages, config)
    seen: list[str] = []
    streamed = collect_stream(backend.stream(messages, config), seen.append)
    assert "".join(seen) == streamed.text == full.text
    assert (streamed.finish_reason, streamed.completion_tokens) == ("length", 16)
    assert streamed.prompt_tokens == full.prompt_tokens > 16
    with ForceToken(backend, backend.stop_ids[0], at=3):
        stopped = collect_stream(backend.stream(messages, GenerationConfig(max_new_tokens=16)))
    assert (stopped.finish_reason, stopped.completion_tokens) == ("stop", 4)


def test_stream_closed_early_cancels_the_worker(backend) -> None:
    iterator = backend.stream(ask("Hi"), GenerationConfig(max_new_tokens=200, min_new_tokens=200))
    next(iterator)
    start = time.perf_counter()
    iterator.close()
    assert time.perf_counter() - start < 5


def test_batch_equals_sequential(backend) -> None:
    conversations = [
        ask("What is this?", make_image(11)),
        ask("Hello"),
        [
            Message(
                "user", [ImagePart(make_image(12)), ImagePart(make_image(13)), TextPart("Diff?")]
            )
        ],
        ask("Is there a tumor in the liver? Answer yes or no.", make_image(14, (20, 60))),
    ]
    config = GenerationConfig(max_new_tokens=10)
    batched = backend.generate_batch(conversations, config)
    single = [backend.generate(c, config) for c in conversations]
    assert [b.text for b in batched] == [s.text for s in single]
    assert [b.prompt_tokens for b in batched] == [s.prompt_tokens for s in single]
    stopping = GenerationConfig(max_new_tokens=10, stop=("e", "a", "o"))
    batched = backend.generate_batch(conversations, stopping)
    single = [backend.generate(c, stopping) for c in conversations]
    assert [(b.text, b.completion_tokens, b.finish_reason) for b in batched] == [
        (s.text, s.completion_tokens, s.finish_reason) for s in single
    ]
    single = [backend.generate(c, config) for c in conversations]
    small = backend.batch_size
    backend.batch_size = 3
    try:
        assert [b.text for b in backend.generate_batch(conversations, config)] == [
            s.text for s in single
        ]
    finally:
        backend.batch_size = small


def test_sampling_is_seeded(backend) -> None:
    config = GenerationConfig(max_new_tokens=8, temperature=1.0, top_p=0.9, seed=3)
    messages = ask("Hi", make_image(15))
    assert backend.generate(messages, config).text == backend.generate(messages, config).text


def test_truncation_keeps_the_end_and_refuses_to_cut_images(backends) -> None:
    backend = backends["llama_3"]
    text_only = ask("What is this? " * 10)
    full = backend.generate(text_only, GenerationConfig(max_new_tokens=2))
    backend.max_length = 40
    try:
        out = backend.generate(text_only, GenerationConfig(max_new_tokens=2))
        assert out.prompt_tokens == 40 and out.raw["truncated"] == full.prompt_tokens - 40
        ((prompt, _),) = backend.prepare([text_only])
        table = backend.model.llm.get_input_embeddings().weight
        assert torch.equal(prompt.embeds[0], table[backend.tokenizer.bos_token_id])
        with pytest.raises(InputError, match="would cut an image"):
            backend.generate(ask("What is this? " * 10, make_image(16)), SHORT)
        backend.truncation_side = "right"  # the reference: keep the first positions
        kept = backend.prepare([text_only])[0][0]
        untouched = backend.model.splice(
            tokenize_prompt(full.raw["prompt"], backend.tokenizer), [], max_length=None
        )
        assert torch.equal(kept.embeds, untouched.embeds[:40])
        with pytest.raises(InputError, match="would cut an image"):
            backend.generate(ask("What is this?", make_image(16)), SHORT)
    finally:
        backend.max_length = 4096
        backend.truncation_side = "left"
