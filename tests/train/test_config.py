"""`m3 train` configuration: presets, overrides, validation errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from medm3.errors import InputError
from medm3.train.config import Config, apply_overrides, config_from_dict, load_config

REPO = Path(__file__).resolve().parents[2]
PRESETS = sorted((REPO / "configs" / "train").glob("*.yaml"))
MINIMAL = {
    "model": {"path": "m"},
    "data": {"train": ["d.json"]},
    "train": {"output_dir": "out"},
}


def test_presets_exist():
    names = {p.name for p in PRESETS}
    assert {"vila_m3_full.yaml", "vila_m3_lora.yaml", "hf_lora_qwen2_5_vl.yaml"} <= names


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_presets_load_and_validate(path):
    config = load_config(path)
    assert isinstance(config, Config)
    assert config.train.output_dir and config.data.train and config.model.path


def test_released_recipe_preset():
    config = load_config(REPO / "configs" / "train" / "vila_m3_full.yaml")
    train = config.train
    assert config.model.kind == "vila" and not config.lora.enabled
    assert config.tune.llm and config.tune.vision_tower and config.tune.projector
    assert (train.epochs, train.learning_rate, train.lr_scheduler) == (2, 2e-5, "cosine")
    assert (train.warmup_ratio, train.mixed_precision, config.data.max_length) == (
        0.03,
        "bf16",
        4096,
    )


def test_accelerate_configs_reference_existing_deepspeed_json():
    folder = REPO / "configs" / "accelerate"
    zero3 = yaml.safe_load((folder / "deepspeed_zero3.yaml").read_text())
    assert zero3["distributed_type"] == "DEEPSPEED"
    ds_file = REPO / zero3["deepspeed_config"]["deepspeed_config_file"]
    ds = json.loads(ds_file.read_text())
    assert ds["zero_optimization"]["stage"] == 3
    assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    fsdp = yaml.safe_load((folder / "fsdp.yaml").read_text())
    assert fsdp["distributed_type"] == "FSDP" and fsdp["fsdp_config"]["fsdp_version"] == 2


def test_overrides_are_typed_and_dotted(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    config = load_config(
        path,
        [
            "train.learning_rate=1e-4",
            "train.max_steps=7",
            "lora.enabled=true",
            "data.train=[a.json, b.json]",
            "model.template=vicuna_v1",
        ],
    )
    assert config.train.learning_rate == 1e-4 and config.train.max_steps == 7
    assert config.lora.enabled and config.data.train == ["a.json", "b.json"]
    assert config.model.template == "vicuna_v1"
    assert config.export_dir == Path("out") / "final"


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        (
            "train.learning_rat=1",
            "unknown key 'train.learning_rat'. Did you mean 'learning_rate'?",
        ),
        ("trian.seed=1", "unknown key 'trian'"),
        ("train.max_steps=many", "train.max_steps: expected an integer, got 'many'"),
        ("train.batch_size=0", "train.batch_size: must be >= 1"),
        ("train.lr_scheduler=step", "train.lr_scheduler: must be one of cosine, linear, constant"),
        ("lora.enabled=maybe", "lora.enabled: expected true/false"),
        ("model.kind=onnx", "model.kind: must be one of vila, hf"),
        ("train=1", "keys are section.key"),
        ("train.seed", "--set expects section.key=value"),
    ],
)
def test_bad_values_raise_one_clear_input_error(tmp_path, override, needle):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(MINIMAL))
    with pytest.raises(InputError) as info:
        load_config(path, [override])
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_required_keys_and_cross_checks():
    with pytest.raises(InputError, match=r"model\.path is required"):
        config_from_dict({})
    broken = json.loads(json.dumps(MINIMAL))
    broken["tune"] = {"llm": False, "vision_tower": False, "projector": False}
    with pytest.raises(InputError, match="nothing to train"):
        config_from_dict(broken)
    broken = json.loads(json.dumps(MINIMAL))
    broken["model"]["kind"] = "hf"
    broken["model"]["template"] = "llama_3"
    with pytest.raises(InputError, match="kind 'vila' only"):
        config_from_dict(broken)


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(InputError, match="invalid YAML") as info:
        load_config(bad)
    assert str(bad) in str(info.value)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump({**MINIMAL, "optim": {}}))
    with pytest.raises(InputError, match="unknown key 'optim'") as info:
        load_config(wrong)
    assert str(wrong) in str(info.value)


def test_apply_overrides_creates_missing_sections():
    raw = apply_overrides({}, ["export.dtype=float32"])
    assert raw == {"export": {"dtype": "float32"}}
