"""CUDA paths of the shared device/dtype selection and streaming (``-m gpu`` on a GPU machine).

Deselected by default (``gpu`` marker); skipped with a reason when CUDA is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_auto_device_and_dtypes_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    from medm3.utils.device import autocast_dtype, select_device, select_dtype

    monkeypatch.delenv("MEDM3_DEVICE", raising=False)
    device = select_device()
    assert device.type == "cuda"
    half = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert autocast_dtype(device) == half
    assert select_dtype(None, device) == torch.float16  # the VILA-M3 reference
    assert select_dtype(None, device, prefer_bf16=True) == half


def test_vila_stream_on_cuda_returns_the_generation(tmp_path: Path) -> None:
    from PIL import Image

    from medm3.testing import build_tiny_vila
    from medm3.vlm.base import GenerationConfig, ImagePart, Message, TextPart, collect_stream
    from medm3.vlm.vila.backend import VilaBackend

    vlm = VilaBackend(str(build_tiny_vila(tmp_path / "vila", "llama_3")), device="cuda")
    assert vlm.dtype == torch.float16 and vlm.device.type == "cuda"
    image = Image.effect_noise((40, 30), 80).convert("RGB")
    messages = [Message("user", [ImagePart(image), TextPart("Describe it.")])]
    config = GenerationConfig(max_new_tokens=12, min_new_tokens=12)
    full = vlm.generate(messages, config)
    pieces: list[str] = []
    streamed = collect_stream(vlm.stream(messages, config), pieces.append)
    assert "".join(pieces) == streamed.text == full.text
    assert (streamed.finish_reason, streamed.completion_tokens) == ("length", 12)
    assert streamed.prompt_tokens == full.prompt_tokens
