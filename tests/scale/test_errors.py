"""Bad executor options: one clear error line, nothing written, no cluster needed."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import pytest

from tests.cli.helpers import assert_one_line_error, run
from tests.conftest import shared_file


def _batch_args(tmp_path: Path) -> list[str]:
    """A batch run of the measure expert (no weights) over one CT + label map."""
    listing = tmp_path / "list.csv"
    image = shared_file("ct/ct_abdomen_3mm.nii.gz")
    mask = shared_file("ct/ct_abdomen_3mm_totalseg.nii.gz")
    listing.write_text(f"image,mask\n{image},{mask}\n")
    return ["experts", "run", "measure", "--list", str(listing), "-o", str(tmp_path / "out")]


def test_ray_not_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    code, _, err = run([*_batch_args(tmp_path), "--executor", "ray"], capsys)
    assert_one_line_error(code, err, "--executor ray needs the 'ray' package", exit_code=3)
    assert 'pip install "medm3[ray]"' in err
    assert not (tmp_path / "out").exists()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_address(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ray")
    address = f"127.0.0.1:{_closed_port()}"
    code, _, err = run([*_batch_args(tmp_path), "--executor", "ray", "--address", address], capsys)
    assert_one_line_error(code, err, f"cannot reach the Ray cluster at {address}")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--workers", "2"], "--workers need(s) --executor ray"),
        (["--executor", "ray", "--workers", "0"], "--workers must be at least 1"),
        (["--executor", "ray", "--gpus-per-worker", "-1"], "--gpus-per-worker must not be"),
        (["--executor", "ray", "--address", "nowhere"], "--address must be auto or HOST:PORT"),
    ],
)
def test_bad_executor_options(
    extra: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if "ray" in extra and needle.startswith("--address"):
        pytest.importorskip("ray")
    code, _, err = run([*_batch_args(tmp_path), *extra], capsys)
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "out").exists()


def test_data_build_and_eval_take_the_same_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build = ["data", "build", "vqa-rad", "--source", str(tmp_path), "-o", str(tmp_path / "o")]
    code, _, err = run([*build, "--workers", "2"], capsys)
    assert_one_line_error(code, err, "--workers need(s) --executor ray")
    evaluate = ["eval", "run", "vqa-rad", "--data", str(tmp_path), "-o", str(tmp_path / "r")]
    code, _, err = run([*evaluate, "--gpus-per-worker", "1"], capsys)
    assert_one_line_error(code, err, "--gpus-per-worker need(s) --executor ray")


@pytest.mark.parametrize(("flag", "extra"), [("--store", []), ("--series", ["1"])])
def test_single_input_options_are_refused_in_a_batch(
    flag: str, extra: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run([*_batch_args(tmp_path), flag, *extra], capsys)
    assert_one_line_error(code, err, f"{flag} works on one input", exit_code=2)
    assert not (tmp_path / "out").exists()
