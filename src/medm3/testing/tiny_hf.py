"""Tiny random-weight vision-language checkpoints for tests (built offline, never downloaded).

Each builder writes a complete Hugging Face folder (config, safetensors weights,
tokenizer, processor with a chat template) of a real architecture, shrunk to a
few hundred kilobytes, that loads with ``AutoModelForImageTextToText`` and
``AutoProcessor`` exactly like the released model it imitates:

* :func:`build_tiny_llava` -- ``LlavaForConditionalGeneration`` (llava-hf layout,
  CLIP vision tower, Llama text model, the llava-1.5 chat template).
* :func:`build_tiny_qwen2_vl` -- ``Qwen2VLForConditionalGeneration`` (dynamic
  resolution, M-RoPE, the Qwen2-VL chat template).
* :func:`build_tiny_gemma3` -- ``Gemma3ForConditionalGeneration`` (the MedGemma
  architecture: SigLIP tower, strict user/model alternation in the template).

The tokenizers are byte-level BPE models trained on a few sentences with the
``tokenizers`` library, plus each architecture's special tokens. Weights are
random (seeded, so a folder is the same every time); the outputs are gibberish
but deterministic, which is what backend tests need.

Requires ``torch``, ``transformers`` and ``tokenizers``; they are imported inside
the builders.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["build_tiny_gemma3", "build_tiny_llava", "build_tiny_qwen2_vl"]

_CORPUS = [
    "The chest X-ray shows no acute cardiopulmonary abnormality.",
    "A CT scan of the abdomen with contrast: the liver and spleen are normal in size.",
    "Is there a tumor in the left kidney? Yes, a small lesion is seen.",
    "Segment the hepatic tumor with VISTA3D and report its volume in milliliters.",
    "MRI of the brain: no enhancing lesion, no midline shift, ventricles normal.",
    "What is the modality of this image? Answer with one word.",
    "Tool result: the expert found pleural effusion with probability 0.82.",
    "You are a helpful medical assistant. Describe the image in detail.",
    "0123456789 mm cm ml % , . ; : ! ? ( ) [ ] { } < > = + - * / ^ _ ' \"",
]

_VOCAB_SIZE = 384

LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' ' }}{% endfor %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- if messages[0]['content'] is string -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- else -%}{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}"
    "{%- endif -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- if (message['role'] == 'assistant') -%}{%- set role = 'model' -%}"
    "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{%- if message['content'] is string -%}{{ message['content'] | trim }}"
    "{%- elif message['content'] is iterable -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{ '<start_of_image>' }}"
    "{%- elif item['type'] == 'text' -%}{{ item['text'] | trim }}{%- endif -%}"
    "{%- endfor -%}"
    "{%- else -%}{{ raise_exception('Invalid content type') }}{%- endif -%}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


def bpe_tokenizer(
    special_tokens: list[str], corpus: list[str] | None = None, vocab_size: int = _VOCAB_SIZE
) -> Any:
    """Train a small byte-level BPE ``tokenizers.Tokenizer`` with ``special_tokens`` first.

    Args:
        special_tokens: Tokens given the first ids, in order.
        corpus: Training sentences (default: a few medical sentences).
        vocab_size: Vocabulary size to train.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS if corpus is None else corpus, trainer=trainer)
    return tok


#: Width and depth of every tiny text model (the released layouts, shrunk).
_TEXT: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
}

#: Every tiny ViT vision tower (CLIP, SigLIP): 32x32 images in 8x8 patches.
_VISION: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
}

#: The tiny Qwen2-VL vision tower: 4-pixel patches merged 2x2 (its own layout, not a ViT's).
_QWEN2_VL_VISION: dict[str, Any] = {
    "depth": 2,
    "embed_dim": 32,
    "hidden_size": 64,
    "num_heads": 2,
    "mlp_ratio": 2,
    "patch_size": 4,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "in_channels": 3,
}


def _tokenizer(
    specials: list[str], cls: Any = None, *, prepend: str | None = None, **kwargs: Any
) -> tuple[Any, dict[str, int], int]:
    """A left-padding transformers tokenizer over a fresh BPE model with ``specials`` first.

    Args:
        specials: The special tokens (ids 0, 1, ... in order).
        cls: Tokenizer class (default ``PreTrainedTokenizerFast``).
        prepend: A token every encoding starts with (as llava-hf and Gemma tokenizers do).
        **kwargs: The tokenizer's named tokens (``bos_token`` ...).

    Returns:
        The tokenizer, the id of each special token and the vocabulary size.
    """
    from tokenizers import processors

    if cls is None:
        from transformers import PreTrainedTokenizerFast as cls

    raw = bpe_tokenizer(specials)
    ids = {t: raw.token_to_id(t) for t in specials}
    tokenizer = cls(tokenizer_object=raw, padding_side="left", **kwargs)
    if prepend is not None:
        tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{prepend} $A",
            pair=f"{prepend} $A {prepend} $B",
            special_tokens=[(prepend, ids[prepend])],
        )
    return tokenizer, ids, raw.get_vocab_size()


def _write(
    path: str | os.PathLike[str],
    model_cls: Any,
    config: Any,
    processor: Any,
    *,
    eos: int | list[int],
    pad: int,
    seed: int,
) -> Path:
    """Build ``model_cls(config)`` with seeded random weights and save it with ``processor``.

    The global RNG is left untouched; the generation config is greedy with the
    given EOS and pad ids.
    """
    import torch
    from transformers import GenerationConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config).eval()
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config = GenerationConfig(
        eos_token_id=eos, pad_token_id=pad, bos_token_id=None, do_sample=False
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def build_tiny_llava(path: str | os.PathLike[str], *, seed: int = 0) -> Path:
    """Write a tiny random LLaVA (llava-hf layout) checkpoint to ``path``.

    CLIP vision tower (32x32 images, 8x8 patches: 16 image tokens), 2-layer Llama
    text model of width 64, the llava-1.5 chat template (``USER: <image>\\n... ASSISTANT:``).

    Args:
        path: Folder to create (or overwrite).
        seed: Seed of the random weights.

    Returns:
        The folder, loadable with ``AutoModelForImageTextToText`` / ``AutoProcessor``.
    """
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer, ids, vocab_size = _tokenizer(
        ["<unk>", "<s>", "</s>", "<pad>", "<image>"],
        prepend="<s>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": 32},
        crop_size={"height": 32, "width": 32},
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
        image_token="<image>",
    )
    text = LlamaConfig(
        vocab_size=vocab_size,
        **_TEXT,
        bos_token_id=ids["<s>"],
        eos_token_id=ids["</s>"],
        pad_token_id=ids["<pad>"],
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**_VISION, projection_dim=32),
        text_config=text,
        image_token_index=ids["<image>"],
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        image_seq_length=16,
    )
    return _write(
        path,
        LlavaForConditionalGeneration,
        config,
        processor,
        eos=ids["</s>"],
        pad=ids["<pad>"],
        seed=seed,
    )


def build_tiny_qwen2_vl(path: str | os.PathLike[str], *, seed: int = 0) -> Path:
    """Write a tiny random Qwen2-VL checkpoint to ``path``.

    Vision patches of 4 pixels merged 2x2, images resized to at most 32x32
    pixels (16 image tokens), 2-layer Qwen2 text model of width 64 with M-RoPE,
    the Qwen2-VL chat template (ChatML, ``<|im_end|>`` ends a turn).

    Args:
        path: Folder to create (or overwrite).
        seed: Seed of the random weights.

    Returns:
        The folder, loadable with ``AutoModelForImageTextToText`` / ``AutoProcessor``.
    """
    from transformers import (
        Qwen2Tokenizer,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>"]
    specials += ["<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tokenizer, ids, vocab_size = _tokenizer(
        specials,
        Qwen2Tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        extra_special_tokens={
            "image_token": "<|image_pad|>",
            "video_token": "<|video_pad|>",
            "vision_bos_token": "<|vision_start|>",
            "vision_eos_token": "<|vision_end|>",
        },
    )
    patches: dict[str, Any] = {
        "patch_size": 4,
        "merge_size": 2,
        "temporal_patch_size": 2,
        "size": {"shortest_edge": 8 * 8, "longest_edge": 32 * 32},
    }
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(**patches),
        tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(**patches),
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )
    config = Qwen2VLConfig(
        text_config={
            "vocab_size": vocab_size,
            **_TEXT,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": [2, 3, 3],
            },
            "bos_token_id": None,
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config=_QWEN2_VL_VISION,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    return _write(
        path,
        Qwen2VLForConditionalGeneration,
        config,
        processor,
        eos=ids["<|im_end|>"],
        pad=ids["<|endoftext|>"],
        seed=seed,
    )


def build_tiny_gemma3(path: str | os.PathLike[str], *, seed: int = 0) -> Path:
    """Write a tiny random Gemma3 (MedGemma architecture) checkpoint to ``path``.

    SigLIP vision tower (32x32 images, 8x8 patches pooled to 4 image tokens),
    2-layer Gemma3 text model of width 64, the Gemma 3 chat template (system text
    folded into the first user turn, roles must alternate, ``<end_of_turn>``).

    Args:
        path: Folder to create (or overwrite).
        seed: Seed of the random weights.

    Returns:
        The folder, loadable with ``AutoModelForImageTextToText`` / ``AutoProcessor``.
    """
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessor,
        Gemma3Processor,
    )

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    specials += ["<start_of_image>", "<end_of_image>", "<image_soft_token>"]
    tokenizer, ids, vocab_size = _tokenizer(
        specials,
        prepend="<bos>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },
    )
    image_processor = Gemma3ImageProcessor(
        size={"height": 32, "width": 32},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        do_pan_and_scan=False,
    )
    processor = Gemma3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=GEMMA3_CHAT_TEMPLATE,
        image_seq_length=4,
    )
    eos = [ids["<eos>"], ids["<end_of_turn>"]]
    config = Gemma3Config(
        text_config={
            "vocab_size": vocab_size,
            **_TEXT,
            "head_dim": 16,
            "sliding_window": 64,
            "bos_token_id": ids["<bos>"],
            "eos_token_id": eos,
            "pad_token_id": ids["<pad>"],
        },
        vision_config={**_VISION, "vision_use_head": False},
        mm_tokens_per_image=4,
        boi_token_index=ids["<start_of_image>"],
        eoi_token_index=ids["<end_of_image>"],
        image_token_index=ids["<image_soft_token>"],
    )
    return _write(
        path,
        Gemma3ForConditionalGeneration,
        config,
        processor,
        eos=eos,
        pad=ids["<pad>"],
        seed=seed,
    )
