"""Fixtures of the training tests: tiny LLaVA JSON data, tiny checkpoints, run helpers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")
pytest.importorskip("peft")

QUESTION = "<image>\nWhat is shown in the image?"
EXPERT_ROW_ID = "expert/0"


def chat_argv(model: Path, data: Path, *backend: str) -> list[str]:
    """``m3 chat`` asking a trained model about the first training image, on CPU."""
    image = data.parent / "images" / "a.png"
    return [
        "chat", *backend, "--model", str(model), "--device", "cpu", "--no-experts",
        "--image", str(image), "--max-new-tokens", "8", "What is shown in the image?",
    ]  # fmt: skip


def write_png(path: Path, seed: int, size: tuple[int, int] = (40, 30)) -> str:
    """A small random RGB PNG; returns its name."""
    from PIL import Image

    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=gen, dtype=torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.numpy()).save(path)
    return path.name


def rows() -> list[dict[str, Any]]:
    """Two VQA rows and an expert-call row (two human turns, one image each)."""
    return [
        {
            "id": "vqa/0",
            "image": "images/a.png",
            "conversations": [
                {"from": "human", "value": QUESTION},
                {"from": "gpt", "value": "This is a chest X-ray."},
            ],
        },
        {
            "id": "vqa/1",
            "image": "images/b.png",
            "conversations": [
                {"from": "human", "value": "<image>\nIs there a tumor in the liver?"},
                {"from": "gpt", "value": "Yes, there is a hepatic tumor."},
            ],
        },
        {
            "id": EXPERT_ROW_ID,
            "images": ["images/a.png", "images/overlay.png"],
            "conversations": [
                {"from": "human", "value": "<image>\nSegment the liver with VISTA3D."},
                {"from": "gpt", "value": "<VISTA3D(hepatic tumor)>"},
                {
                    "from": "human",
                    "value": "<image>\nThe results are <segmentation>. Use this result to "
                    "respond to this prompt:\nIs there a tumor?",
                },
                {"from": "gpt", "value": "Yes, a hepatic tumor is seen."},
            ],
        },
    ]


def write_dataset(folder: Path, data: list[dict[str, Any]] | None = None) -> Path:
    """Write images and ``train.json`` into ``folder``; returns the JSON path."""
    for seed, name in enumerate(("a.png", "b.png", "overlay.png")):
        write_png(folder / "images" / name, seed)
    path = folder / "train.json"
    path.write_text(json.dumps(rows() if data is None else data, indent=1), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def dataset_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three-row LLaVA JSON (images beside it)."""
    return write_dataset(tmp_path_factory.mktemp("llava"))


@pytest.fixture(scope="session")
def tiny_vila(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny VILA checkpoints for both templates."""
    from medm3.testing import build_tiny_vila

    return {t: build_tiny_vila(tmp_path_factory.mktemp(t), t) for t in ("llama_3", "vicuna_v1")}


@pytest.fixture(scope="session")
def tiny_llava(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny llava-hf checkpoint."""
    from medm3.testing import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("llava-hf"))


@pytest.fixture(autouse=True)
def _fresh_accelerate_state() -> Any:
    """Each run builds its own Accelerator (the state is a process-wide singleton)."""
    yield
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def make_config(model: Path, data: Path, out: Path, kind: str = "vila", **sections: Any) -> Any:
    """A small CPU config; ``sections`` update e.g. ``train={"max_steps": 3}``."""
    from medm3.train.config import config_from_dict

    raw: dict[str, Any] = {
        "model": {"kind": kind, "path": str(model)},
        "data": {"train": [str(data)], "max_length": 512, "num_workers": 0},
        "train": {
            "output_dir": str(out),
            "max_steps": 4,
            "batch_size": 2,
            "learning_rate": 1e-3,
            "warmup_ratio": 0.0,
            "lr_scheduler": "constant",
            "gradient_checkpointing": False,
            "save_steps": 0,
            "mixed_precision": "no",
            "seed": 0,
        },
        "export": {"dtype": "float32"},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return config_from_dict(raw)
