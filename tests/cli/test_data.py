"""`m3 data`: build / list / mix from the command line; bad input is one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.helpers import assert_one_line_error as assert_input_error
from tests.cli.helpers import run
from tests.data.fixtures import VQA_RAD_RECORDS, write_vqa_rad


def test_build_and_rerun(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write_vqa_rad(tmp_path / "VQA_RAD")
    out = tmp_path / "out"
    code, stdout, err = run(
        ["data", "build", "vqa-rad", "--source", str(source), "-o", str(out)], capsys
    )
    assert code == 0, err
    assert stdout.strip() == f"wrote {out}: train 2 rows, test 2 rows (0 bad, 0 skipped)"
    assert sorted(p.name for p in out.iterdir()) == [
        "images",
        "manifest.json",
        "test.json",
        "train.json",
    ]

    code, _, err = run(
        ["data", "build", "vqa-rad", "--source", str(source), "-o", str(out)], capsys
    )
    assert_input_error(code, err, "already exists (pass --overwrite")
    code, stdout, _ = run(
        ["data", "build", "vqa-rad", "--source", str(source), "-o", str(out), "--overwrite",
         "--json", "--seed", "7"],
        capsys,
    )  # fmt: skip
    assert code == 0 and json.loads(stdout)["seed"] == 7


def test_unknown_builder_suggests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        ["data", "build", "vqa-rd", "--source", "x", "-o", str(tmp_path / "o")], capsys
    )
    assert_input_error(code, err, "unknown data builder 'vqa-rd'. Did you mean 'vqa-rad'?")


@pytest.mark.parametrize(
    ("make_args", "needle"),
    [
        (lambda t: ["--source", str(t / "missing"), "-o", str(t / "o")], "source not found"),
        (lambda t: ["--source", str(t), "-o", str(t / "o")], "not a VQA-RAD release"),
        (lambda t: ["-o", str(t / "o")], "missing --source PATH"),
        (lambda t: ["--source", str(t)], "missing -o/--output"),
        (
            lambda t: ["--source", str(t), "-o", str(t / "o"), "--max-bad-fraction", "3"],
            "--max-bad-fraction must be between 0 and 1",
        ),
    ],
)
def test_bad_input_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_args, needle: str
) -> None:
    code, _, err = run(["data", "build", "vqa-rad", *make_args(tmp_path)], capsys)
    assert_input_error(code, err, needle)
    assert not (tmp_path / "o").exists()
    assert not list(tmp_path.glob(".o*"))


def test_too_many_bad_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = [dict(r) for r in VQA_RAD_RECORDS]
    records[1]["question"] = ""
    source = write_vqa_rad(tmp_path / "src", records)
    out = tmp_path / "o"
    code, _, err = run(
        ["data", "build", "vqa-rad", "--source", str(source), "-o", str(out)], capsys
    )
    assert_input_error(code, err, "1 of 4 source rows are malformed")
    assert "vqa-rad/2: missing 'question'" in err and not out.exists()
    code, stdout, _ = run(
        ["data", "build", "vqa-rad", "--source", str(source), "-o", str(out),
         "--max-bad-fraction", "0.25"],
        capsys,
    )  # fmt: skip
    assert code == 0 and "(1 bad, 0 skipped)" in stdout


def test_help_shows_layout_and_options(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["data", "build", "vqa-rad", "--help"], capsys)
    assert code == 0
    assert "VQA_RAD Dataset Public.json     # list of question records" in out
    code, out, _ = run(["data", "build", "iu-xray", "--help"], capsys)
    assert "--allow-missing-images" in out and "--sections" in out
    code, out, _ = run(["data", "build", "--help"], capsys)
    assert "expert-vista3d" in out and "iu-xray" in out


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["data", "list"], capsys)
    names = [line.split()[0] for line in out.strip().splitlines()]
    assert code == 0 and names[:3] == ["vqa-rad", "slake", "pathvqa"]
    assert {"expert-cxr", "expert-vista3d", "expert-brats", "iu-xray", "mimic-cxr"} <= set(names)
    code, out, _ = run(["data", "list", "--json"], capsys)
    assert json.loads(out)[0]["layout"].startswith("VQA-RAD from the OSF release")


def test_mix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write_vqa_rad(tmp_path / "src")
    run(
        ["data", "build", "vqa-rad", "--source", str(source), "-o", str(tmp_path / "radvqa")],
        capsys,
    )
    config = tmp_path / "m.yaml"
    config.write_text("datasets:\n  - {name: radvqa, path: radvqa, repeat: 4}\n")
    out = tmp_path / "mix.json"
    code, stdout, err = run(
        ["data", "mix", str(config), "--root", str(tmp_path), "-o", str(out)], capsys
    )
    assert code == 0, err
    assert stdout.splitlines() == ["radvqa: 2 rows x 4 = 8", f"wrote {out}: 8 rows"]
    code, _, err = run(["data", "mix", str(tmp_path / "nope.yaml"), "-o", str(out)], capsys)
    assert_input_error(code, err, "mixture file not found")
