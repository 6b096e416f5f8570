"""`m3 info`: text and JSON output, options, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from click.testing import CliRunner

from medm3.cli.main import cli
from tests.cli.helpers import run as run_m3


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_info_text(ct_path: Path, cxr_mono1_path: Path) -> None:
    result = run("info", str(ct_path), str(cxr_mono1_path))
    assert result.exit_code == 0, result.output
    out = result.output
    assert "CT (inferred from intensities)" in out
    assert "122 x 101 x 30" in out and "3 x 3 x 3" in out
    assert "orientation   RAS" in out and "int16" in out
    assert "XR (from DICOM tag)" in out and "MONOCHROME1" in out and "view: PA" in out


def test_info_json(ct_path: Path, mr_path: Path) -> None:
    result = run("info", "--json", str(ct_path), str(mr_path))
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert isinstance(data, list) and len(data) == 2
    ct, mr = data
    assert ct["modality"] == "CT" and ct["modality_inferred"] is True
    assert ct["shape"] == [122, 101, 30] and ct["spacing_mm"] == [3.0, 3.0, 3.0]
    assert ct["dtype"] == "int16" and ct["value_range"] == [-1100.0, 1207.0]
    assert mr["orientation"] == "RAS" and mr["original_orientation"] == "LAS"


def test_info_modality_override(mr_path: Path) -> None:
    result = run("info", "--json", "--modality", "CT", str(mr_path))
    assert json.loads(result.output)[0]["modality_source"] == "caller"


def test_info_series_option(tmp_path: Path, capsys) -> None:
    test_files = Path(pydicom.data.__file__).parent / "test_files"  # never download
    for number, name in enumerate(["CT_small.dcm", "MR_small.dcm"], start=1):
        ds = pydicom.dcmread(test_files / name)
        ds.SeriesNumber = number
        ds.SeriesDescription = name.split("_")[0]
        ds.save_as(tmp_path / f"IM{number}")
    code, out, err = run_m3(["info", str(tmp_path)], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "--series" in err and "[1]" in err and "'MR'" in err
    good = run("info", "--json", "--series", "1", str(tmp_path))
    assert good.exit_code == 0, good.output
    summary = json.loads(good.output)[0]
    assert (summary["series_description"], summary["modality"]) == ("MR", "MR")


@pytest.mark.parametrize("kind", ["empty", "renamed", "missing"])
def test_info_bad_file_is_one_line_exit_2(tmp_path: Path, cxr_png_path: Path, kind: str) -> None:
    path = tmp_path / "scan.nii"
    if kind == "empty":
        path.touch()
    elif kind == "renamed":
        path.write_bytes(cxr_png_path.read_bytes())
    proc = subprocess.run(
        [sys.executable, "-m", "medm3", "info", str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith(f"m3: error: {path}: ")
