"""The SentencePiece (3B/13B) path against the reference tokenizer and VILA's own functions.

``fixtures/vila_spm/reference_ids.json`` was computed by ``make_reference.py``
in a scratch environment: transformers 4.x ``LlamaTokenizer`` loaded as VILA's
``build_llm_and_tokenizer`` does (``use_fast=False, legacy=False``), the prompt
built by VILA's ``conv_templates["vicuna_v1"]`` and the ids by VILA's
``tokenizer_image_token``, on the committed tiny ``tokenizer.model``. medm3 must
give the same text and ids from a checkpoint whose ``llm/`` holds only that file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
spm = pytest.importorskip("sentencepiece")

from PIL import Image  # noqa: E402

from medm3.testing import build_tiny_vila  # noqa: E402
from medm3.testing.tiny_vila import train_sentencepiece  # noqa: E402
from medm3.vlm.base import GenerationConfig, ImagePart, Message, TextPart  # noqa: E402
from medm3.vlm.vila import VilaBackend, render_prompt, tokenize_prompt  # noqa: E402
from medm3.vlm.vila.spm_tokenizer import SlowLlamaTokenizer  # noqa: E402
from medm3.vlm.vila.templates import get_template  # noqa: E402
from medm3.vlm.vila.tokenize import load_tokenizer, stop_token_ids  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "vila_spm"
MODEL = FIXTURES / "tokenizer.model"
REFERENCE = json.loads((FIXTURES / "reference_ids.json").read_text(encoding="utf-8"))
CASES = REFERENCE["cases"]
FIXTURE_VOCAB = 800  # train_sentencepiece(800) made tokenizer.model


def to_messages(turns: list[list[str]]) -> list[Message]:
    """VILA-style turns (``<image>\\n`` in the text) as medm3 messages with image parts."""
    messages = []
    for role, text in turns:
        pieces = text.split("<image>\n")
        parts: list[ImagePart | TextPart] = []
        for index, piece in enumerate(pieces):
            if index:
                parts.append(ImagePart(Image.new("RGB", (8, 8), (index * 40, 0, 0))))
            if piece:
                parts.append(TextPart(piece))
        messages.append(Message("user" if role == "USER" else "assistant", parts))
    return messages


@pytest.fixture(scope="module", params=["with_config", "old_style_config", "model_only"])
def checkpoint(request, tmp_path_factory) -> Path:
    """Tiny vicuna_v1 checkpoint on the fixture model.

    ``with_config``: tokenizer config as transformers 4.36 saves it;
    ``old_style_config``: the older Llama-2 style the reference was also run on;
    ``model_only``: ``tokenizer.model`` is the only tokenizer file.
    """
    root = tmp_path_factory.mktemp(request.param)
    build_tiny_vila(
        root,
        "vicuna_v1",
        tokenizer_model=MODEL,
        tokenizer_config=request.param != "model_only",
        vocab_size=FIXTURE_VOCAB,
    )
    if request.param == "old_style_config":
        config = json.dumps(REFERENCE["old_style_tokenizer_config"])
        (root / "llm" / "tokenizer_config.json").write_text(config, encoding="utf-8")
        (root / "llm" / "special_tokens_map.json").unlink()
    return root


@pytest.fixture(scope="module")
def tokenizer(checkpoint):
    tok, template = load_tokenizer(checkpoint / "llm")
    assert template == "vicuna_v1"
    return tok


def test_fixture_is_the_committed_model() -> None:
    digest = hashlib.sha256(MODEL.read_bytes()).hexdigest()
    assert digest == REFERENCE["provenance"]["tokenizer_model_sha256"]
    assert REFERENCE["provenance"]["transformers"].startswith("4.")
    assert REFERENCE["provenance"]["tokenizer_class"] == "LlamaTokenizer"


def test_tiny_model_training_is_deterministic() -> None:
    """``train_sentencepiece`` rebuilds the fixture byte for byte (same sentencepiece)."""
    if spm.__version__ != REFERENCE["provenance"]["sentencepiece"]:
        pytest.skip(
            f"fixture trained with sentencepiece {REFERENCE['provenance']['sentencepiece']}, "
            f"installed {spm.__version__}"
        )
    first = train_sentencepiece(FIXTURE_VOCAB)
    assert first == train_sentencepiece(FIXTURE_VOCAB)
    assert hashlib.sha256(first).hexdigest() == REFERENCE["provenance"]["tokenizer_model_sha256"]


def test_llm_folder_has_no_fast_tokenizer(checkpoint) -> None:
    files = {p.name for p in (checkpoint / "llm").iterdir()}
    assert "tokenizer.model" in files and "tokenizer.json" not in files
    assert ("tokenizer_config.json" in files) != checkpoint.name.startswith("model_only")


def test_slow_tokenizer_is_chosen(tokenizer) -> None:
    assert isinstance(tokenizer, SlowLlamaTokenizer) and tokenizer.legacy is False
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (1, 2)
    assert "<image>" not in tokenizer.get_vocab()


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_prompt_ids_equal_the_reference(tokenizer, case) -> None:
    assert tokenize_prompt(case["prompt"], tokenizer) == case["ids"]


@pytest.mark.parametrize(
    "case", [c for c in CASES if c["render"]], ids=[c["name"] for c in CASES if c["render"]]
)
def test_rendered_prompt_equals_the_reference(case) -> None:
    text, images = render_prompt(to_messages(case["turns"]), "vicuna_v1")
    assert text == case["prompt"]
    assert len(images) == case["prompt"].count("<image>")


def test_default_system_and_separator_are_the_reference() -> None:
    template = get_template("vicuna_v1")
    assert template.default_system == REFERENCE["system"]
    assert template.stop_tokens[0] == REFERENCE["stop_str"]


def test_stop_ids_cover_the_reference_keyword(tokenizer) -> None:
    """run_vila.py stops on ``tokenizer("</s>")`` minus BOS; that id stops medm3 too."""
    assert set(REFERENCE["stop_keyword_ids"]) <= set(stop_token_ids(tokenizer, "vicuna_v1"))


@pytest.mark.parametrize("index", range(len(REFERENCE["decode"])))
def test_decode_equals_the_reference(tokenizer, index) -> None:
    item = REFERENCE["decode"][index]
    assert tokenizer.decode(item["ids"], skip_special_tokens=True) == item["text"]


# -- the backend end to end on the fixture tokenizer -----------------------------------------
@pytest.fixture(scope="module")
def backend(tmp_path_factory) -> VilaBackend:
    """Backend on a checkpoint whose ``llm/`` has ``tokenizer.model`` as its only tokenizer file."""
    root = build_tiny_vila(
        tmp_path_factory.mktemp("bare"),
        "vicuna_v1",
        tokenizer_model=MODEL,
        tokenizer_config=False,
        vocab_size=FIXTURE_VOCAB,
    )
    return VilaBackend(str(root), device="cpu")


class ForceSequence:
    """lm_head hook: at generation step ``k``, batch row ``r`` emits ``rows[r][k]``."""

    def __init__(self, backend: VilaBackend, *rows: list[int]) -> None:
        self.rows, self.step = rows, 0
        self.handle = backend.model.llm.lm_head.register_forward_hook(self)

    def __call__(self, module, args, output):
        output = output.clone()
        for row, tokens in enumerate(self.rows[: output.shape[0]]):
            if self.step < len(tokens):
                output[row, -1, tokens[self.step]] = 1e4
        self.step += 1
        return output

    def __enter__(self) -> ForceSequence:
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


@pytest.mark.parametrize(
    "case", [c for c in CASES if c["render"]], ids=[c["name"] for c in CASES if c["render"]]
)
def test_backend_ids_equal_the_reference(backend, case) -> None:
    (rendered,) = backend.render([to_messages(case["turns"])])
    assert rendered.text == case["prompt"]
    assert rendered.ids == case["ids"]


def run_vila_answer(text: str, stop: str) -> str:
    """run_vila.py / gradio_m3.py post-processing of the decoded output."""
    text = text.strip()
    if text.endswith(stop):
        text = text[: -len(stop)]
    return text.strip()


def image_question() -> list[Message]:
    return [Message("user", [ImagePart(Image.new("RGB", (9, 7))), TextPart("Hi")])]


@pytest.mark.parametrize("index", range(len(REFERENCE["decode"])))
def test_answer_text_generate_and_stream(backend, index) -> None:
    """Forced reference ids end in ``</s>``: generation stops there with the reference text."""
    item = REFERENCE["decode"][index]
    expected = run_vila_answer(item["text"], REFERENCE["stop_str"])
    config = GenerationConfig(max_new_tokens=len(item["ids"]) + 5)
    with ForceSequence(backend, item["ids"]):
        out = backend.generate(image_question(), config)
    assert (out.text, out.finish_reason, out.completion_tokens) == (
        expected,
        "stop",
        len(item["ids"]),
    )
    with ForceSequence(backend, item["ids"]):
        assert "".join(backend.stream(image_question(), config)) == expected
    if item.get("spelled_separator"):
        # "</s>" spelled with ordinary pieces is text: only the separator id stops.
        # (KeywordsStoppingCriteria's text check decodes output_ids[:, -offset:] with
        # offset = min(new - prompt length, 1): with inputs_embeds generation that is
        # the last token once the answer is longer than the prompt, an odd window
        # before; its id check, output_ids[0, -1:] == [2], is the one that matters.)
        assert "</s>" in out.text


def test_answer_texts_in_one_batch(backend) -> None:
    """One batch, each row forced to another reference answer: each stops at its own ``</s>``."""
    items = REFERENCE["decode"]
    config = GenerationConfig(max_new_tokens=max(len(i["ids"]) for i in items) + 5)
    with ForceSequence(backend, *(i["ids"] for i in items)):
        batch = backend.generate_batch([image_question() for _ in items], config)
    assert [(b.text, b.finish_reason, b.completion_tokens) for b in batch] == [
        (run_vila_answer(i["text"], REFERENCE["stop_str"]), "stop", len(i["ids"])) for i in items
    ]
