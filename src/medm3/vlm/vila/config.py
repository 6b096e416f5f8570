"""The root ``config.json`` of a VILA-M3 checkpoint, read as plain JSON.

``model_type`` ``llava_llama`` is not a transformers Auto class, so the file is
read directly; the paths stored inside it are ignored (the subfolders
``llm/``, ``vision_tower/``, ``mm_projector/`` are used, as by the reference
loader).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medm3.errors import InputError

SUBFOLDERS = ("llm", "vision_tower", "mm_projector")
SUPPORTED_FEATURES = ("cls_patch", "patch")
SUPPORTED_ASPECT = ("resize", "pad")


@dataclass(frozen=True)
class VilaConfig:
    """What the loader needs from the checkpoint.

    Attributes:
        root: Checkpoint folder.
        hidden_size: LLM width (root ``hidden_size``).
        mm_hidden_size: Vision tower width.
        vision_select_layer: Index into the tower's hidden states (-2).
        vision_select_feature: ``cls_patch`` (all tokens) or ``patch`` (drops the first).
        image_aspect_ratio: ``resize`` (the released checkpoints) or ``pad``.
        vocab_size: From ``llm/config.json``.
        model_max_length: Sequence limit used to truncate prompts (4096).
        model_dtype: Stored dtype name, e.g. ``torch.bfloat16``.
    """

    root: Path
    hidden_size: int
    mm_hidden_size: int
    vision_select_layer: int = -2
    vision_select_feature: str = "cls_patch"
    image_aspect_ratio: str = "resize"
    vocab_size: int = 0
    model_max_length: int = 4096
    model_dtype: str = "torch.bfloat16"

    @property
    def llm_dir(self) -> Path:
        """The ``llm/`` subfolder."""
        return self.root / "llm"

    @property
    def vision_dir(self) -> Path:
        """The ``vision_tower/`` subfolder."""
        return self.root / "vision_tower"

    @property
    def projector_dir(self) -> Path:
        """The ``mm_projector/`` subfolder."""
        return self.root / "mm_projector"


def _load_json(path: Path) -> dict:
    from medm3.utils.jsonio import read_json

    return read_json(path, expect=dict)


def check_layout(root: Path) -> None:
    """Check the VILA folder layout.

    Raises:
        InputError: Missing root ``config.json``, subfolder or subfolder config, naming
            what is missing.
    """
    if not root.is_dir():
        raise InputError("VILA-M3 checkpoint folder not found", root)
    missing = [name for name in ("config.json",) if not (root / name).is_file()]
    missing += [f"{sub}/" for sub in SUBFOLDERS if not (root / sub).is_dir()]
    missing += [
        f"{sub}/config.json"
        for sub in SUBFOLDERS
        if (root / sub).is_dir() and not (root / sub / "config.json").is_file()
    ]
    if missing:
        raise InputError(
            f"not a VILA-M3 checkpoint: missing {', '.join(missing)} (expected config.json, "
            "llm/, vision_tower/ and mm_projector/ as in MONAI/Llama3-VILA-M3-8B)",
            root,
        )


def read_config(root: Path) -> VilaConfig:
    """Validate the layout and read the root and ``llm/`` configs.

    Raises:
        InputError: Bad layout, wrong ``model_type`` or an unsupported setting.
    """
    check_layout(root)
    path = root / "config.json"
    data = _load_json(path)
    model_type = data.get("model_type")
    if model_type != "llava_llama":
        raise InputError(
            f"model_type is {model_type!r}, expected 'llava_llama' "
            "(a VILA1.5 / VILA-M3 checkpoint)",
            path,
        )
    if data.get("mm_use_im_start_end"):
        raise InputError("mm_use_im_start_end=true is not supported (VILA-M3 uses false)", path)
    feature = data.get("mm_vision_select_feature", "cls_patch")
    if feature not in SUPPORTED_FEATURES:
        raise InputError(f"unsupported mm_vision_select_feature {feature!r}", path)
    aspect = data.get("image_aspect_ratio", "resize")
    if aspect not in SUPPORTED_ASPECT:
        raise InputError(f"unsupported image_aspect_ratio {aspect!r}", path)

    llm = _load_json(root / "llm" / "config.json")
    text_config = llm.get("text_config", llm)
    hidden = data.get("hidden_size", text_config.get("hidden_size"))
    mm_hidden = data.get("mm_hidden_size")
    if mm_hidden is None:
        vision = _load_json(root / "vision_tower" / "config.json")
        mm_hidden = vision.get("vision_config", vision).get("hidden_size")
    if not isinstance(hidden, int) or not isinstance(mm_hidden, int):
        raise InputError("config.json lacks hidden_size / mm_hidden_size", path)
    max_length = (
        text_config.get("tokenizer_model_max_length") or data.get("model_max_length") or 4096
    )
    return VilaConfig(
        root=root,
        hidden_size=hidden,
        mm_hidden_size=mm_hidden,
        vision_select_layer=int(data.get("mm_vision_select_layer", -2)),
        vision_select_feature=feature,
        image_aspect_ratio=aspect,
        vocab_size=int(text_config.get("vocab_size", 0)),
        model_max_length=int(max_length),
        model_dtype=str(data.get("model_dtype", "torch.bfloat16")),
    )
