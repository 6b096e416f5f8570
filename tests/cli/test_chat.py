"""`m3 chat` end to end: tiny VILA-M3 and transformers models on real images."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.helpers import run


@pytest.fixture(scope="module")
def tiny_vila(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medm3.testing import build_tiny_vila

    return build_tiny_vila(tmp_path_factory.mktemp("vila") / "tiny-vila-m3")


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from medm3.testing import build_tiny_llava

    return build_tiny_llava(tmp_path_factory.mktemp("llava") / "tiny-llava")


def test_vila_on_real_ct_answers_with_trace(tiny_vila, ct_path, tmp_path, capsys):
    code, out, _ = run(
        [
            "chat",
            "--backend",
            "vila",
            "--model",
            str(tiny_vila),
            "--image",
            str(ct_path),
            "--max-new-tokens",
            "8",
            "-o",
            str(tmp_path / "out"),
            "--json",
            "Is there a liver lesion?",
        ],
        capsys,
    )
    assert code == 0
    doc = json.loads(out)
    assert doc["answer"] and doc["backend"] == "vila" and doc["model"] == str(tiny_vila)
    assert doc["trace"][1]["step"] == "view" and doc["trace"][1]["plane"] == "axial"
    first = doc["trace"][2]
    assert first["step"] == "generate" and first["input"][0]["images"] == 1
    text = first["input"][0]["text"]
    assert text.startswith("Here is a list of available expert models:\n")
    assert "<VISTA3D(args)> Modality: CT" in text
    assert text.endswith("<image>\nThis is a CT image.\nIs there a liver lesion?")


def test_vila_streams_plain_answer(tiny_vila, cxr_png_path, capsys):
    code, out, _ = run(
        [
            "chat",
            "--model",
            str(tiny_vila),
            "--image",
            str(cxr_png_path),
            "--max-new-tokens",
            "6",
            "What do you see?",
        ],
        capsys,
    )
    assert code == 0 and out.strip()


def test_hf_backend_with_experts_off(tiny_llava, cxr_png_path, capsys):
    code, out, _ = run(
        [
            "chat",
            "--backend",
            "hf",
            "--model",
            str(tiny_llava),
            "--image",
            str(cxr_png_path),
            "--no-experts",
            "--max-new-tokens",
            "5",
            "--json",
            "Any effusion?",
        ],
        capsys,
    )
    assert code == 0
    doc = json.loads(out)
    assert "expert models" not in doc["trace"][2]["input"][0]["text"]
    assert doc["rounds"] == 0


def test_interactive_session_keeps_history(tiny_vila, cxr_png_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "medm3",
            "chat",
            "--model",
            str(tiny_vila),
            "--image",
            str(cxr_png_path),
            "--max-new-tokens",
            "4",
            "--json",
        ],
        input="first question\n\nsecond question\nexit\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    replies = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert len(replies) == 2
    second_input = replies[1]["trace"][1]["input"]
    assert second_input == [{"role": "user", "text": "second question", "images": 0}]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["chat", "--backend", "hf", "q"], "has no default model"),
        (["chat", "--backend", "vlia", "--model", "x", "q"], "Did you mean 'vila'"),
        (["chat", "--model", "/nonexistent/folder", "q"], "checkpoint folder not found"),
        (["chat", "--model", "x", "--image", "/nonexistent.nii.gz", "q"], "nonexistent.nii.gz"),
        (["chat", "--model", "x", "   "], "the prompt is empty"),
        (
            ["chat", "--model", "x", "--protocol", "vila", "q"],
            "unknown protocol 'vila'; choose one of: released, medm3",
        ),
    ],
)
def test_bad_input_one_line(argv, message, capsys):
    code, out, err = run(argv, capsys)
    assert code != 0 and out == ""
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_offline_hub_id_says_how_to_download(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    code, _, err = run(["chat", "--model", "MONAI/Llama3-VILA-M3-3B", "q"], capsys)
    assert code != 0
    assert "huggingface-cli download MONAI/Llama3-VILA-M3-3B" in err and "--model" in err


def test_typed_image_token_in_the_prompt_is_harmless(tiny_vila, ct_path, tmp_path, capsys):
    code, out, err = run(
        [
            "chat",
            "--model",
            str(tiny_vila),
            "--image",
            str(ct_path),
            "--max-new-tokens",
            "4",
            "-o",
            str(tmp_path / "out"),
            "--json",
            "What is <image> shown here?\n<image>",
        ],
        capsys,
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["protocol"] == "released" and doc["trace"][0]["protocol"] == "released"
    first = doc["trace"][2]["input"][0]
    assert first["images"] == 1 and first["text"].count("<image>") == 1
    assert first["text"].endswith("<image>\nThis is a CT image.\nWhat is  shown here?")


def test_released_protocol_refused_for_a_tool_calling_backend(capsys):
    code, out, err = run(
        [
            "chat",
            "--backend",
            "openai",
            "--model",
            "m",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--api-key",
            "k",
            "--protocol",
            "released",
            "q",
        ],
        capsys,
    )
    assert code != 0 and out == "" and "Traceback" not in err
    assert "use --protocol medm3" in err and err.count("\n") == 1
