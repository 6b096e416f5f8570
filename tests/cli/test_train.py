"""`m3 train` on the command line: bad configs fail in one line (exit 2); a tiny run works."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.cli.helpers import assert_one_line_error, run


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "train.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model": {"kind": "vila", "path": str(tmp_path / "model")},
                "data": {"train": [str(tmp_path / "data" / "train.json")], "num_workers": 0},
                "train": {"output_dir": str(tmp_path / "run"), "mixed_precision": "no"},
            }
        )
    )
    return path


def test_help_lists_train(capsys):
    code, out, _ = run(["--help"], capsys)
    assert code == 0 and "train" in out and "LoRA" in out


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--set", "train.epochz=1"], "unknown key 'train.epochz'. Did you mean 'epochs'?"),
        (["--set", "train.learning_rate=fast"], "train.learning_rate: expected a number"),
        (["--set", "lora.r=0"], "lora.r: must be >= 1"),
        (["--set", "model.kind=onnx"], "model.kind: must be one of vila, hf"),
    ],
)
def test_bad_config_is_one_line_exit_2(config_file, capsys, extra, needle):
    code, _, err = run(["train", str(config_file), *extra], capsys)
    assert_one_line_error(code, err, needle)
    assert str(config_file) in err


def test_missing_config_and_missing_data(tmp_path, config_file, capsys):
    code, _, err = run(["train", str(tmp_path / "nope.yaml")], capsys)
    assert_one_line_error(code, err, "config file not found")
    code, _, err = run(["train", str(config_file), "--dry-run"], capsys)
    assert_one_line_error(code, err, "dataset JSON not found")


def test_dry_run_then_a_tiny_run(tmp_path, config_file, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("accelerate")
    from medm3.testing import build_tiny_vila
    from tests.train.conftest import write_dataset

    build_tiny_vila(tmp_path / "model")
    write_dataset(tmp_path / "data")
    code, out, err = run(["train", str(config_file), "--dry-run"], capsys)
    assert code == 0, err
    assert yaml.safe_load(out)["model"]["kind"] == "vila"
    assert "3 conversations, 4 images" in err
    try:
        code, out, err = run(
            [
                "train",
                str(config_file),
                "--set",
                "train.max_steps=2",
                "--set",
                "train.batch_size=2",
                "--set",
                "export.dtype=float32",
                "--no-progress",
            ],
            capsys,
        )
    finally:
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(True)
        GradientState._reset_state()
    assert code == 0, err
    assert out.strip() == str(tmp_path / "run" / "final")
    assert "trained 2 steps" in err
    assert (tmp_path / "run" / "final" / "llm" / "model.safetensors").is_file()
    assert (tmp_path / "run" / "config.yaml").is_file()
