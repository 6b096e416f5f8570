"""Tiny random-weight VILA-M3 checkpoints in the released folder layout (tests, benchmarks).

The layout is the one of ``MONAI/Llama3-VILA-M3-{3B,8B,13B}`` (see
``shared/docs/vila-m3-checkpoints.md``)::

    config.json                 model_type llava_llama, read as plain JSON
    llm/                        LlamaForCausalLM + tokenizer + generation_config.json
    vision_tower/               SiglipVisionModel + preprocessor_config.json
    mm_projector/               config.json (v2l_projector) + model.safetensors
                                (layers.1.*, layers.2.*, layers.4.*)

Sizes are tiny (LLM hidden 64, 2 layers; SigLIP hidden 32, image 42, patch 6,
so an odd 7x7 patch grid that exercises the projector's padding). Weights are
stored in bf16 like the released ones. Nothing is downloaded: the tokenizer is
trained here, a byte-level BPE with the Llama-3 special tokens for ``llama_3``
and a SentencePiece BPE model (byte fallback, like Llama-2; see
:func:`train_sentencepiece`) for ``vicuna_v1``, whose ``llm/`` then holds no
``tokenizer.json``, as in the released 3B and 13B.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

TEMPLATES = ("llama_3", "vicuna_v1")

_SYSTEM_TEXT = (
    "You are a helpful language and vision assistant. You are able to understand the visual "
    "content that the user provides, and assist the user with a variety of tasks using natural "
    "language. A chat between a curious user and an artificial intelligence assistant. The "
    "assistant gives helpful, detailed, and polite answers to the user's questions."
)

_CORPUS = [
    _SYSTEM_TEXT,
    "USER: What is this? ASSISTANT: This is a chest X-ray.",
    "What is shown in the image? The image shows a CT scan of the abdomen.",
    "Is there a tumor in the liver? Yes, there is a hepatic tumor.",
    "Segment the spleen, the kidneys and the pancreas with VISTA3D.",
    "The lungs are clear. No pleural effusion, pneumothorax or cardiomegaly.",
    "Brain MRI with T1, T1c, T2 and FLAIR sequences; the BraTS expert finds an edema.",
    "Describe the findings and give an impression. Answer yes or no.",
    "0 1 2 3 4 5 6 7 8 9 10 42 100 mm cm % left right upper lower",
    "user assistant system image question answer report modality",
]

# Extra SentencePiece text: expert turns and non-ASCII, so that the tiny
# vocabulary has multi-byte pieces as well as byte-fallback gaps.
_SPM_EXTRA = [
    "This is a CT image. I segmented the liver with <VISTA3D(hepatic tumor)>.",
    "The colors in this image describe red: liver, blue: hepatic tumor. Use this result.",
    "This is a CXR image. The resulting predictions are: Atelectasis: yes, Effusion: no.",
    "Größe der Läsion: 12 mm; Leber und Milz unauffällig. Résumé: cœur de taille normale.",
    "肝臓に腫瘍があります。胸部 X 線写真。 São Paulo, µm, ±0.5 °C, naïve café.",
]

SPM_CORPUS: tuple[str, ...] = (*_CORPUS, *_SPM_EXTRA)
"""Text the tiny SentencePiece models are trained on (3 passes)."""

_LLAMA3_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]


def _llama3_tokenizer(vocab_size: int) -> Any:
    """Byte-level BPE with the Llama-3 special tokens (+ ``[PAD]`` last, as in the 8B)."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    from medm3.testing.tiny_hf import bpe_tokenizer

    tok = bpe_tokenizer(list(_LLAMA3_SPECIALS), _CORPUS * 3, vocab_size)
    tok.add_special_tokens(["[PAD]"])
    bos = "<|begin_of_text|>"
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tok.token_to_id(bos))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token="<|end_of_text|>",
        pad_token="[PAD]",
        model_max_length=4096,
    )


def train_sentencepiece(vocab_size: int = 400, corpus: Any = None) -> bytes:
    """Train a Llama-2-like SentencePiece BPE model (byte fallback, dummy prefix).

    Training is single-threaded and byte-for-byte deterministic for a given
    ``sentencepiece`` version, so the same arguments give the same model.

    Args:
        vocab_size: Pieces in the model (3 specials + 256 bytes included).
        corpus: Training sentences (default: :data:`SPM_CORPUS`).

    Returns:
        The serialized ``tokenizer.model``.
    """
    import sentencepiece as spm

    model = io.BytesIO()
    sentences = list(SPM_CORPUS if corpus is None else corpus)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences * 3),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        split_digits=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        allow_whitespace_only_pieces=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def _write_vicuna_tokenizer(
    llm_dir: Path, vocab_size: int, model: bytes | None = None, config_files: bool = True
) -> None:
    """Write ``tokenizer.model`` (+ the slow-tokenizer config files when asked)."""
    (llm_dir / "tokenizer.model").write_bytes(model or train_sentencepiece(vocab_size))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (llm_dir / name).unlink(missing_ok=True)
    if not config_files:
        return
    specials = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"}
    added = {  # as transformers 4.36 (the version VILA-M3 was trained with) saves them
        str(i): {
            "content": token,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for i, token in enumerate(("<unk>", "<s>", "</s>"))
    }
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "added_tokens_decoder": added,
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": False,
        "model_max_length": 4096,
        "padding_side": "right",
        "clean_up_tokenization_spaces": False,
        **specials,
    }
    _write_json(llm_dir / "tokenizer_config.json", config)
    _write_json(llm_dir / "special_tokens_map.json", specials)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _save_model(model: Any, folder: Path) -> None:
    """Save config + bf16 ``model.safetensors`` (no progress bar, as fast as it gets)."""
    import torch
    from safetensors.torch import save_file

    model.config.dtype = "bfloat16"
    model.config.save_pretrained(folder)
    state = {k: v.detach().to(torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})


def _vocab_of(llm_dir: Path, template: str) -> tuple[int, dict[str, int]]:
    """(vocab size, special token ids) of the tokenizer just written."""
    if template == "vicuna_v1":
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(llm_dir / "tokenizer.model"))
        return sp.get_piece_size(), {"bos": 1, "eos": 2, "pad": 0}
    data = json.loads((llm_dir / "tokenizer.json").read_text(encoding="utf-8"))
    size = max(
        [*data["model"]["vocab"].values(), *(t["id"] for t in data["added_tokens"])],
    )
    ids = {t["content"]: t["id"] for t in data["added_tokens"]}
    return size + 1, {
        "bos": ids["<|begin_of_text|>"],
        "eos": ids["<|end_of_text|>"],
        "pad": ids["[PAD]"],
    }


def build_tiny_vila(
    path: str | os.PathLike[str],
    template: str = "llama_3",
    seed: int = 0,
    *,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    vision_hidden_size: int = 32,
    vision_layers: int = 2,
    image_size: int = 42,
    patch_size: int = 6,
    vocab_size: int = 400,
    tokenizer_model: str | os.PathLike[str] | None = None,
    tokenizer_config: bool = True,
) -> Path:
    """Write a tiny random-weight VILA-M3 checkpoint in the released folder layout.

    Args:
        path: Folder to create (parents too); existing files of the layout are overwritten.
        template: ``"llama_3"`` (8B-like: byte-level BPE with ``<|eot_id|>``) or
            ``"vicuna_v1"`` (3B/13B-like: SentencePiece ``tokenizer.model``).
        seed: Seed of the random weights (same seed, same checkpoint).
        hidden_size: LLM width (also the projector output width).
        num_hidden_layers: LLM layers.
        vision_hidden_size: SigLIP width (``mm_hidden_size``).
        vision_layers: SigLIP encoder layers (>= 2: features come from the second-to-last).
        image_size: SigLIP input size; with ``patch_size`` it should give an odd grid.
        patch_size: SigLIP patch size.
        vocab_size: Size of the trained tokenizer vocabulary (before added tokens).
        tokenizer_model: ``vicuna_v1`` only: use this SentencePiece ``tokenizer.model``
            instead of training one (e.g. a committed test fixture).
        tokenizer_config: ``vicuna_v1`` only: also write ``tokenizer_config.json`` and
            ``special_tokens_map.json`` (as the released 3B/13B); ``False`` leaves
            ``tokenizer.model`` alone in ``llm/``.

    Returns:
        The checkpoint folder.

    Raises:
        ValueError: Unknown template or inconsistent sizes.
    """
    import torch

    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; expected one of {TEMPLATES}")
    if image_size % patch_size or vision_layers < 2:
        raise ValueError("image_size must be a multiple of patch_size and vision_layers >= 2")
    root = Path(path)
    llm_dir, vt_dir, proj_dir = root / "llm", root / "vision_tower", root / "mm_projector"
    for folder in (llm_dir, vt_dir, proj_dir):
        folder.mkdir(parents=True, exist_ok=True)

    # Tokenizer first: the LLM's vocabulary size follows it.
    if template == "llama_3":
        _write_llama3_tokenizer(llm_dir, vocab_size)
    else:
        model = Path(tokenizer_model).read_bytes() if tokenizer_model else None
        _write_vicuna_tokenizer(llm_dir, vocab_size, model, tokenizer_config)
    torch.manual_seed(seed)  # the LLM, then the vision tower, draw from it in turn
    _write_llm(llm_dir, template, hidden_size, num_hidden_layers)
    _write_vision_tower(vt_dir, vision_hidden_size, vision_layers, image_size, patch_size)
    _write_projector(proj_dir, 4 * vision_hidden_size, hidden_size, seed + 1)
    _write_json(root / "config.json", _root_config(hidden_size, vision_hidden_size))
    return root


def _write_llama3_tokenizer(llm_dir: Path, vocab_size: int) -> None:
    """Save the byte-level BPE tokenizer with the released ``tokenizer_config.json`` class."""
    _llama3_tokenizer(vocab_size).save_pretrained(llm_dir)
    tok_config = json.loads((llm_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    tok_config.pop("backend", None)
    tok_config["tokenizer_class"] = "PreTrainedTokenizerFast"  # as in the released files
    _write_json(llm_dir / "tokenizer_config.json", tok_config)


def _write_llm(llm_dir: Path, template: str, hidden_size: int, num_hidden_layers: int) -> None:
    """A random ``LlamaForCausalLM`` (global RNG) sized to the tokenizer in ``llm_dir``."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    llm_vocab, special = _vocab_of(llm_dir, template)
    heads = max(2, hidden_size // 32)
    llm_config = LlamaConfig(
        vocab_size=llm_vocab,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=8192,
        rms_norm_eps=1e-5,
        rope_theta=500000.0 if template == "llama_3" else 10000.0,
        tie_word_embeddings=False,
        bos_token_id=special["bos"],
        eos_token_id=special["eos"],
        pad_token_id=special["pad"],
    )
    llm_config.tokenizer_model_max_length = 4096
    llm = LlamaForCausalLM(llm_config)
    with torch.no_grad():  # a larger init gives varied greedy tokens on a tiny model
        for p in llm.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.1)
    _save_model(llm, llm_dir)
    GenerationConfig(
        bos_token_id=special["bos"], eos_token_id=special["eos"], pad_token_id=special["pad"]
    ).save_pretrained(llm_dir)


def _write_vision_tower(
    vt_dir: Path, hidden_size: int, layers: int, image_size: int, patch_size: int
) -> None:
    """A random ``SiglipVisionModel`` (global RNG) and its released-style preprocessor config."""
    from transformers import SiglipImageProcessorPil, SiglipVisionConfig, SiglipVisionModel

    vt_config = SiglipVisionConfig(
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch_size,
    )
    _save_model(SiglipVisionModel(vt_config), vt_dir)
    processor = SiglipImageProcessorPil(
        size={"height": image_size, "width": image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    processor.save_pretrained(vt_dir)
    prep = json.loads((vt_dir / "preprocessor_config.json").read_text(encoding="utf-8"))
    prep["image_processor_type"] = "SiglipImageProcessor"  # as in the released files
    _write_json(vt_dir / "preprocessor_config.json", prep)


def _write_projector(proj_dir: Path, width: int, hidden_size: int, seed: int) -> None:
    """The ``mlp_downsample`` projector weights (layers 1, 2, 4) in bf16 and its config."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int, mean: float = 0.0, std: float = 0.05) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen) * std + mean).to(torch.bfloat16)

    save_file(
        {
            "layers.1.weight": rand(width, mean=1.0, std=0.1),
            "layers.1.bias": rand(width),
            "layers.2.weight": rand(hidden_size, width, std=0.1),
            "layers.2.bias": rand(hidden_size),
            "layers.4.weight": rand(hidden_size, hidden_size, std=0.1),
            "layers.4.bias": rand(hidden_size),
        },
        str(proj_dir / "model.safetensors"),
        metadata={"format": "pt"},
    )
    _write_json(
        proj_dir / "config.json",
        {
            "architectures": ["MultimodalProjector"],
            "model_type": "v2l_projector",
            "mm_projector_type": "mlp_downsample",
            "torch_dtype": "bfloat16",
        },
    )


def _root_config(hidden_size: int, vision_hidden_size: int) -> dict[str, Any]:
    """The top-level ``config.json`` of the released layout."""
    return {
        "architectures": ["LlavaLlamaModel"],
        "model_type": "llava_llama",
        "llm_cfg": {"_name_or_path": "./llm", "architectures": ["LlamaForCausalLM"]},
        "vision_tower_cfg": {
            "_name_or_path": "./vision_tower",
            "architectures": ["SiglipVisionModel"],
        },
        "mm_projector_cfg": {
            "_name_or_path": "./mm_projector",
            "architectures": ["MultimodalProjector"],
            "mm_projector_type": "mlp_downsample",
        },
        "hidden_size": hidden_size,
        "mm_hidden_size": vision_hidden_size,
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "cls_patch",
        "image_aspect_ratio": "resize",
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "mm_projector_lr": None,
        "model_dtype": "torch.bfloat16",
        "vision_resolution": -1,
        "s2": False,
        "tune_language_model": True,
        "tune_mm_projector": True,
        "tune_vision_tower": True,
        "transformers_version": "4.36.2",
    }
