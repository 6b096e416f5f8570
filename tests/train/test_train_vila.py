"""Training tiny VILA-M3 checkpoints: overfit, export, chat, checkpoints, resume."""

from __future__ import annotations

import json
import shutil

import pytest

from medm3.errors import InputError
from medm3.train.checkpoints import list_checkpoints
from medm3.train.trainer import train
from tests.cli.helpers import run
from tests.train.conftest import chat_argv, make_config, rows, write_dataset

torch = pytest.importorskip("torch")


def losses(result) -> list[float]:
    return [json.loads(line)["loss"] for line in result.log_path.read_text().splitlines()]


def test_full_finetune_overfits_then_exports_a_chat_model(tiny_vila, tmp_path, capsys):
    data = write_dataset(tmp_path / "data", rows()[:2])
    out = tmp_path / "run"
    config = make_config(
        tiny_vila["llama_3"],
        data,
        out,
        train={
            "max_steps": 20,
            "learning_rate": 3e-3,
            "save_steps": 5,
            "save_total_limit": 2,
            "gradient_checkpointing": True,
        },
    )
    result = train(config, progress=False)
    curve = losses(result)
    assert result.steps == 20 and len(curve) == 20
    assert curve[-1] < 0.25 * curve[0], curve
    record = json.loads(result.log_path.read_text().splitlines()[-1])
    assert set(record) >= {"step", "epoch", "loss", "lr", "grad_norm"}
    assert [step for step, _ in list_checkpoints(out)] == [15, 20]
    assert not list(out.glob(".checkpoint-*"))

    final = result.export_dir
    assert final == out / "final"
    for name in ("config.json", "llm/config.json", "llm/tokenizer.json", "llm/model.safetensors"):
        assert (final / name).is_file(), name
    assert (final / "vision_tower/preprocessor_config.json").is_file()
    assert (final / "mm_projector/model.safetensors").is_file()
    info = json.loads((final / "medm3_train.json").read_text())
    assert info["kind"] == "vila" and info["steps"] == 20 and info["template"] == "llama_3"

    code, answer, err = run(chat_argv(final, data), capsys)
    assert code == 0, err
    assert answer.strip().startswith("This is a chest"), answer


def test_resume_after_interruption_matches_an_uninterrupted_run(tiny_vila, tmp_path):
    """LoRA with dropout + projector, gradient accumulation, vicuna_v1; stopped after step 4."""
    from safetensors.torch import load_file

    from medm3.vlm.base import GenerationConfig, Message
    from medm3.vlm.vila import VilaBackend

    data = write_dataset(tmp_path / "data")
    settings = {
        "train": {
            "max_steps": 6,
            "save_steps": 2,
            "save_total_limit": 3,
            "batch_size": 1,
            "gradient_accumulation_steps": 2,
            "lr_scheduler": "cosine",
            "warmup_ratio": 0.2,
        },
        "lora": {"enabled": True, "r": 4, "alpha": 8, "dropout": 0.1},
        "tune": {"vision_tower": False, "projector": True},
        "export": {"dtype": "float32", "save_adapter": True},
    }
    base = tiny_vila["vicuna_v1"]
    whole = train(make_config(base, data, tmp_path / "whole", **settings), progress=False)

    class Interrupted(Exception):
        pass

    def stop_after_4(step: int, record: dict) -> None:
        if step == 4:
            raise Interrupted

    from accelerate.state import AcceleratorState, GradientState

    out = tmp_path / "resumed"
    with pytest.raises(Interrupted):
        train(make_config(base, data, out, **settings), progress=False, on_step=stop_after_4)
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    assert [step for step, _ in list_checkpoints(out)] == [2, 4]
    saved = load_file(str(out / "checkpoint-4" / "model.safetensors"))
    assert saved and all("lora_" in k or "projector" in k for k in saved)  # frozen weights left out

    resumed = train(make_config(base, data, out, **settings), progress=False)
    steps = [json.loads(line)["step"] for line in resumed.log_path.read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert losses(resumed) == pytest.approx(losses(whole), rel=1e-5)
    for part in ("llm", "mm_projector", "vision_tower"):
        a = load_file(str(whole.export_dir / part / "model.safetensors"))
        b = load_file(str(resumed.export_dir / part / "model.safetensors"))
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)
    assert (resumed.export_dir / "adapter" / "adapter_config.json").is_file()
    assert not any(
        "lora" in k for k in load_file(str(resumed.export_dir / "llm/model.safetensors"))
    )
    backend = VilaBackend(str(resumed.export_dir), device="cpu")
    generation = backend.generate([Message.text("user", "Hi")], GenerationConfig(max_new_tokens=4))
    assert isinstance(generation.text, str) and generation.completion_tokens >= 1


def test_resume_never_refuses_existing_checkpoints(tiny_vila, dataset_json, tmp_path):
    out = tmp_path / "run"
    (out / "checkpoint-3").mkdir(parents=True)
    (out / "checkpoint-3" / "trainer_state.json").write_text('{"step": 3}')
    config = make_config(tiny_vila["llama_3"], dataset_json, out, train={"resume": "never"})
    with pytest.raises(InputError, match="already in the output folder"):
        train(config, progress=False)
    shutil.rmtree(out)
