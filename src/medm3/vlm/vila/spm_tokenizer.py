"""The slow SentencePiece Llama tokenizer (``use_fast=False, legacy=False``) of transformers 4.x.

VILA loads the 3B/13B tokenizers as ``LlamaTokenizer.from_pretrained(path,
use_fast=False, legacy=False)``. transformers 5 dropped that class (its
``LlamaTokenizer`` is the tokenizers-backed one and ``use_fast`` is ignored), so
this module rebuilds its behaviour on transformers 5's generic
``SentencePieceBackend``: the SentencePiece model runs without its dummy prefix,
a ``"▁"`` is prepended to the whole text (not after special tokens), BOS is
added in front, and decoding drops the prefix space again.
"""

from __future__ import annotations

from typing import Any

from transformers.tokenization_utils_sentencepiece import SPIECE_UNDERLINE, SentencePieceBackend


class SlowLlamaTokenizer(SentencePieceBackend):
    """SentencePiece Llama tokenizer with the transformers 4.x ``legacy=False`` behaviour.

    Args:
        vocab_file: Path of ``tokenizer.model``.
        unk_token: Unknown token.
        bos_token: Beginning-of-sequence token (added in front when ``add_bos_token``).
        eos_token: End-of-sequence token.
        pad_token: Padding token, if any.
        add_bos_token: Add BOS in front of every encoded text.
        add_eos_token: Add EOS at the end of every encoded text.
        add_prefix_space: Prepend ``"▁"`` to the text (Llama's dummy prefix).
        legacy: Must stay ``False`` (the behaviour VILA uses).
        **kwargs: Passed to ``SentencePieceBackend`` (e.g. ``added_tokens_decoder``).
    """

    vocab_files_names = {"vocab_file": "tokenizer.model"}  # noqa: RUF012
    model_input_names = ["input_ids", "attention_mask"]  # noqa: RUF012

    def __init__(
        self,
        vocab_file: str,
        unk_token: Any = "<unk>",
        bos_token: Any = "<s>",
        eos_token: Any = "</s>",
        pad_token: Any = None,
        add_bos_token: bool = True,
        add_eos_token: bool = False,
        add_prefix_space: bool = True,
        legacy: bool = False,
        **kwargs: Any,
    ) -> None:
        self.add_bos_token = add_bos_token
        self.add_eos_token = add_eos_token
        self.add_prefix_space = add_prefix_space
        kwargs.pop("use_fast", None)
        kwargs.pop("tokenizer_class", None)
        kwargs.setdefault("clean_up_tokenization_spaces", False)
        super().__init__(
            vocab_file=vocab_file,
            unk_token=unk_token,
            bos_token=bos_token,
            eos_token=eos_token,
            pad_token=pad_token,
            legacy=legacy,
            add_bos_token=add_bos_token,
            add_eos_token=add_eos_token,
            add_prefix_space=add_prefix_space,
            **kwargs,
        )
        self.legacy = legacy

    def tokenize(self, text: str, **kwargs: Any) -> list[str]:
        """Split ``text`` into pieces; ``"▁"`` is prepended once to the whole text."""
        if self.legacy or not text:
            return super().tokenize(text, **kwargs)
        text = text.replace(SPIECE_UNDERLINE, " ")
        if self.add_prefix_space:
            text = SPIECE_UNDERLINE + text
        tokens = super().tokenize(text, **kwargs)
        specials = self.all_special_tokens
        if len(tokens) > 1 and tokens[0] == SPIECE_UNDERLINE and tokens[1] in specials:
            tokens = tokens[1:]
        return tokens

    def build_inputs_with_special_tokens(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        """``[BOS] ids [EOS]`` according to ``add_bos_token`` / ``add_eos_token``."""
        bos = [self.bos_token_id] if self.add_bos_token else []
        eos = [self.eos_token_id] if self.add_eos_token else []
        out = bos + token_ids_0 + eos
        if token_ids_1 is not None:
            out += bos + token_ids_1 + eos
        return out

    def get_special_tokens_mask(
        self,
        token_ids_0: list[int],
        token_ids_1: list[int] | None = None,
        already_has_special_tokens: bool = False,
    ) -> list[int]:
        """1 for the BOS/EOS that :meth:`build_inputs_with_special_tokens` adds, else 0."""
        if already_has_special_tokens:
            return super().get_special_tokens_mask(token_ids_0, token_ids_1, True)
        bos = [1] if self.add_bos_token else []
        eos = [1] if self.add_eos_token else []
        out = bos + [0] * len(token_ids_0) + eos
        if token_ids_1 is not None:
            out += bos + [0] * len(token_ids_1) + eos
        return out

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Join pieces; special tokens are kept verbatim, the prefix space is dropped."""
        if not tokens:
            return ""
        tokens = list(tokens)
        if tokens[0].startswith(SPIECE_UNDERLINE) and self.add_prefix_space:
            tokens[0] = tokens[0][1:]
        specials = set(self.all_special_tokens)
        pending: list[str] = []
        out = ""
        prev_is_special = False
        for i, token in enumerate(tokens):
            if token in specials:
                out += self.sp_model.decode(pending) + token
                pending = []
                prev_is_special = True
            else:
                if (
                    prev_is_special
                    and i == 1
                    and self.add_prefix_space
                    and not token.startswith(SPIECE_UNDERLINE)
                ):
                    out += " "
                pending.append(token)
                prev_is_special = False
        return out + self.sp_model.decode(pending)
