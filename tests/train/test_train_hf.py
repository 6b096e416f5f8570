"""LoRA fine-tuning of a tiny llava-hf model: overfit, merged export, `m3 chat --backend hf`."""

from __future__ import annotations

import json

import pytest

from medm3.train.trainer import train
from tests.cli.helpers import run
from tests.train.conftest import chat_argv, make_config, rows, write_dataset

pytest.importorskip("torch")

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"]


def test_lora_overfits_and_exports_merged_weights(tiny_llava, tmp_path, capsys):
    from safetensors.torch import load_file

    data = write_dataset(tmp_path / "data", rows()[:2])
    config = make_config(
        tiny_llava,
        data,
        tmp_path / "run",
        kind="hf",
        train={"max_steps": 20, "learning_rate": 1e-2, "gradient_checkpointing": True},
        lora={"enabled": True, "r": 16, "alpha": 32, "dropout": 0.0, "target_modules": TARGETS},
        tune={"vision_tower": False, "projector": False},
    )
    result = train(config, progress=False)
    curve = [json.loads(line)["loss"] for line in result.log_path.read_text().splitlines()]
    assert curve[-1] < 0.4 * curve[0], curve

    final = result.export_dir
    info = json.loads((final / "medm3_train.json").read_text())
    assert info["kind"] == "hf" and set(info["trainable"]) == {"lora"}
    weights = load_file(str(final / "model.safetensors"))
    base = load_file(str(tiny_llava / "model.safetensors"))
    assert weights.keys() == base.keys()  # adapters merged, the checkpoint's own key names
    q_proj = [k for k in base if k.endswith("layers.0.self_attn.q_proj.weight")]
    (llm,) = [k for k in q_proj if "vision" not in k]
    (vision,) = [k for k in q_proj if "vision" in k]
    assert not weights[llm].equal(base[llm])
    assert weights[vision].equal(base[vision])
    assert (final / "chat_template.jinja").is_file()

    code, out, err = run(chat_argv(final, data, "--backend", "hf"), capsys)
    assert code == 0, err
    assert out.strip(), out
