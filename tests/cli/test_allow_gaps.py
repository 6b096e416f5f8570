"""`m3 info` / `m3 render` on a DICOM series with a missing slice: refuse, or --allow-gaps."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from medm3.imaging.readers.dicom_gaps import GAPS_ENV
from tests.cli.helpers import assert_one_line_error, run
from tests.imaging.conftest import synthetic_volume, write_series

AFFINE = np.array([[0.8, 0, 0, -20.0], [0, 0.9, 0, 10.0], [0, 0, 2.5, 30.0], [0, 0, 0, 1]])


@pytest.fixture
def gap_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """8 axial slices with the one at RAS z index 3 removed (runs 0-2 and 4-7)."""
    monkeypatch.delenv(GAPS_ENV, raising=False)
    info = write_series(tmp_path / "gap", synthetic_volume((6, 5, 8)), AFFINE)
    missing = [f for f in info.files if float(pydicom.dcmread(f).ImagePositionPatient[2]) == 37.5]
    missing[0].unlink()
    return info.folder


def test_info_refuses_a_gap_and_names_the_option(gap_folder: Path, capsys) -> None:
    code, out, err = run(["info", str(gap_folder)], capsys)
    assert_one_line_error(code, err, "--allow-gaps largest|fill")
    assert not out


def test_info_fill_lists_the_filled_slices(gap_folder: Path, capsys) -> None:
    code, out, err = run(["info", "--allow-gaps", "fill", str(gap_folder)], capsys)
    assert code == 0, err
    assert "6 x 5 x 8" in out and "filled slices  axis 2 index 3" in out
    assert "--allow-gaps fill: DICOM series has gaps: 1 missing slice(s) filled" in out
    code, out, err = run(["info", "--json", "--allow-gaps", "fill", str(gap_folder)], capsys)
    doc = json.loads(out)[0]
    assert doc["filled_slices"] == [3] and doc["gaps"]["copied_from"] == {"3": 2}


def test_the_option_does_not_outlive_its_command(gap_folder: Path, capsys) -> None:
    code, _, err = run(["info", "--allow-gaps", "fill", str(gap_folder)], capsys)
    assert code == 0, err
    assert GAPS_ENV not in os.environ  # an in-process call leaves no setting for the next one
    code, _, err = run(["info", str(gap_folder)], capsys)
    assert_one_line_error(code, err, "--allow-gaps largest|fill")


def test_info_largest_reports_what_was_kept(gap_folder: Path, capsys) -> None:
    code, out, err = run(["info", "--json", "--allow-gaps", "largest", str(gap_folder)], capsys)
    assert code == 0, err
    doc = json.loads(out)[0]
    assert doc["shape"] == [6, 5, 4] and doc["gaps"]["slices_used"] == 4
    assert "4 of 7 slices (40.00 to 47.50 mm" in doc["gaps"]["note"]


def test_render_takes_the_option(gap_folder: Path, tmp_path: Path, capsys) -> None:
    png = tmp_path / "gap.png"
    code, out, err = run(["render", str(gap_folder), "-o", str(png)], capsys)
    assert_one_line_error(code, err, "--allow-gaps")
    assert not png.exists()
    code, out, err = run(
        ["render", "--allow-gaps", "largest", str(gap_folder), "-o", str(png)], capsys
    )
    assert code == 0, err
    assert "slice 2 of 0-3" in out and Image.open(png).size[0] > 0


@pytest.mark.parametrize("command", ["chat", "experts-run"])
def test_commands_that_read_scans_take_the_option(
    command: str, gap_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """chat and experts run read the scan through the same option (refused without it)."""
    monkeypatch.setenv("MEDM3_CACHE", str(tmp_path / "empty-cache"))

    def argv(*flags: str) -> list[str]:
        if command == "chat":
            return ["chat", "--backend", "mock", *flags, "--image", str(gap_folder), "hello"]
        return ["experts", "run", "vista3d", *flags, str(gap_folder)]

    code, _, err = run(argv(), capsys)
    assert_one_line_error(code, err, "--allow-gaps largest|fill")
    code, _, err = run(argv("--allow-gaps", "largest"), capsys)
    assert "missing slice" not in err, err  # the scan loaded; the rest is the command's own work
    assert code == (0 if command == "chat" else 3), err  # experts run: then no weights (exit 3)
    assert GAPS_ENV not in os.environ
