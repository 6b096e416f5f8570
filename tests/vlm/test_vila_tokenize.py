"""<image> chunk tokenisation, BOS handling, the -200 sentinel and tokenizer choice."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("sentencepiece")

from medm3.testing import build_tiny_vila
from medm3.vlm.base import Message, TextPart
from medm3.vlm.vila.templates import render_prompt
from medm3.vlm.vila.tokenize import (
    IMAGE_TOKEN_INDEX,
    load_tokenizer,
    stop_token_ids,
    tokenize_prompt,
)


@pytest.fixture(scope="module", params=["llama_3", "vicuna_v1"])
def tokenizer_and_template(request, tmp_path_factory):
    root = build_tiny_vila(tmp_path_factory.mktemp(request.param), request.param)
    return load_tokenizer(Path(root) / "llm")


def test_template_detection_and_tokenizer_class(tokenizer_and_template) -> None:
    tokenizer, template = tokenizer_and_template
    if template == "llama_3":
        assert "<|eot_id|>" in tokenizer.get_vocab()
    else:
        from medm3.vlm.vila.spm_tokenizer import SlowLlamaTokenizer

        assert isinstance(tokenizer, SlowLlamaTokenizer)
        assert tokenizer.legacy is False
    assert "<image>" not in tokenizer.get_vocab()


def test_image_then_text_ids(tokenizer_and_template) -> None:
    tokenizer, _ = tokenizer_and_template
    bos = tokenizer.bos_token_id
    tail = tokenizer("\nWhat is this?").input_ids
    assert tail[0] == bos
    ids = tokenize_prompt("<image>\nWhat is this?", tokenizer)
    assert ids == [bos, IMAGE_TOKEN_INDEX, *tail[1:]]


def test_chunks_between_images_drop_their_bos(tokenizer_and_template) -> None:
    tokenizer, _ = tokenizer_and_template
    bos = tokenizer.bos_token_id
    a, b, c = (tokenizer(t).input_ids for t in ("Compare ", "\nwith", "\nNow?"))
    ids = tokenize_prompt("Compare <image>\nwith<image>\nNow?", tokenizer)
    assert ids == [*a, IMAGE_TOKEN_INDEX, *b[1:], IMAGE_TOKEN_INDEX, *c[1:]]
    assert ids[0] == bos and ids.count(bos) == 1
    both = [bos, IMAGE_TOKEN_INDEX, IMAGE_TOKEN_INDEX]
    assert tokenize_prompt("<image><image>", tokenizer) == both


def test_full_prompt_bos_handling(tokenizer_and_template) -> None:
    tokenizer, template = tokenizer_and_template
    from PIL import Image

    from medm3.vlm.base import ImagePart

    messages = [Message("user", [ImagePart(Image.new("RGB", (4, 4))), TextPart("Hi")])]
    text, _ = render_prompt(messages, template)
    ids = tokenize_prompt(text, tokenizer)
    bos = tokenizer.bos_token_id
    assert ids.count(IMAGE_TOKEN_INDEX) == 1
    if template == "llama_3":  # template literal + tokenizer BOS, as in training
        assert ids[:2] == [bos, bos] and ids[2] != bos
    else:
        assert ids[0] == bos and ids[1] != bos


def test_stop_ids(tokenizer_and_template) -> None:
    tokenizer, template = tokenizer_and_template
    vocab = tokenizer.get_vocab()
    ids = stop_token_ids(tokenizer, template)
    if template == "llama_3":
        assert ids[:2] == [vocab["<|eot_id|>"], vocab["<|end_of_text|>"]]
    else:
        assert ids == [vocab["</s>"]]


def test_sentencepiece_legacy_false_rules(tmp_path) -> None:
    """Slow Llama tokenizer, legacy=False: one prefix space, none after special tokens."""
    root = build_tiny_vila(tmp_path, "vicuna_v1")
    tokenizer, template = load_tokenizer(root / "llm")
    assert template == "vicuna_v1"
    pieces = tokenizer.tokenize("hi</s>USER: x")
    assert pieces[0].startswith("▁")
    after = pieces[pieces.index("</s>") + 1]
    assert not after.startswith("▁")  # legacy=True would give '▁U...'
    ids = tokenizer("What is this?").input_ids
    assert tokenizer.decode(ids, skip_special_tokens=True) == "What is this?"
