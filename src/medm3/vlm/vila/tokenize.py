"""Tokenizer loading and VILA's ``<image>`` chunk tokenisation.

``<image>`` is never registered as a token (that would change the tokens
around it). The prompt is split on it, each chunk is tokenised on its own, the
first token (the BOS) of every chunk after the first is dropped, and the sentinel
:data:`IMAGE_TOKEN_INDEX` (-200) stands between chunks. The ``llama_3``
template text starts with a literal ``<|begin_of_text|>`` and the tokenizer adds
one too, so its ids start with BOS twice, as in training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medm3.errors import InputError
from medm3.vlm.vila.templates import IMAGE_PLACEHOLDER, get_template

IMAGE_TOKEN_INDEX = -200
LLAMA3_MARKER = "<|eot_id|>"


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def load_tokenizer(llm_dir: Path, template: str | None = None) -> tuple[Any, str]:
    """Load the LLM tokenizer and choose the conversation template.

    The template is ``llama_3`` when the vocabulary has ``<|eot_id|>``, else
    ``vicuna_v1``, unless ``template`` says otherwise. ``vicuna_v1`` checkpoints
    with a ``tokenizer.model`` get the slow SentencePiece tokenizer
    (``use_fast=False, legacy=False`` as in VILA); otherwise ``tokenizer.json``
    is loaded as is with ``PreTrainedTokenizerFast``.

    Args:
        llm_dir: The checkpoint's ``llm/`` folder.
        template: Template name to force, or ``None`` to detect it.

    Returns:
        ``(tokenizer, template name)``.

    Raises:
        InputError: No tokenizer files, or an unknown template name.
    """
    from transformers import PreTrainedTokenizerFast

    forced = get_template(template).name if template else None
    has_json = (llm_dir / "tokenizer.json").is_file()
    has_spm = (llm_dir / "tokenizer.model").is_file()
    if not (has_json or has_spm):
        raise InputError("no tokenizer found (expected tokenizer.json or tokenizer.model)", llm_dir)
    fast = PreTrainedTokenizerFast.from_pretrained(str(llm_dir)) if has_json else None
    detected = "llama_3" if fast is not None and LLAMA3_MARKER in fast.get_vocab() else "vicuna_v1"
    name = forced or detected
    if name == "vicuna_v1" and has_spm:
        from medm3.vlm.vila.spm_tokenizer import SlowLlamaTokenizer

        config = _read_json(llm_dir / "tokenizer_config.json")
        kwargs: dict[str, Any] = {"legacy": False}
        if "add_bos_token" not in config:
            kwargs["add_bos_token"] = True
        return SlowLlamaTokenizer.from_pretrained(str(llm_dir), **kwargs), name
    if fast is None:  # pragma: no cover - llama_3 forced on a SentencePiece-only folder
        raise InputError("the llama_3 template needs tokenizer.json", llm_dir)
    return fast, name


def stop_token_ids(tokenizer: Any, template: str) -> list[int]:
    """Ids of the template's stop tokens that exist in the vocabulary (+ the EOS token)."""
    vocab = tokenizer.get_vocab()
    ids = [vocab[t] for t in get_template(template).stop_tokens if t in vocab]
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is not None and eos not in ids:
        ids.append(eos)
    return ids


def tokenize_prompt(text: str, tokenizer: Any) -> list[int]:
    """Token ids of a rendered prompt with :data:`IMAGE_TOKEN_INDEX` where ``<image>`` was.

    Mirrors VILA's ``tokenizer_image_token`` (``llava/mm_utils.py``): chunks are
    tokenised separately; when the first chunk starts with BOS, that BOS is kept
    and the first token of every later chunk (the BOS the tokenizer added to it)
    is dropped, whatever it is, as the reference does.

    Args:
        text: Prompt text (see :func:`~medm3.vlm.vila.templates.render_prompt`).
        tokenizer: The LLM tokenizer (adds BOS itself).

    Returns:
        The ids, one sentinel per ``<image>``.
    """
    chunks = [tokenizer(chunk).input_ids for chunk in text.split(IMAGE_PLACEHOLDER)]
    drop = 1 if chunks[0] and chunks[0][0] == tokenizer.bos_token_id else 0
    ids: list[int] = list(chunks[0])
    for chunk in chunks[1:]:
        ids.append(IMAGE_TOKEN_INDEX)
        ids.extend(chunk[drop:])
    return ids
