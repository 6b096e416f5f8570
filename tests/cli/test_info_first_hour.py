"""`m3 info` says what it does not know: assumed spacing, greyscale conversion, label maps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from tests.cli.helpers import run
from tests.conftest import shared_ct as sample_ct
from tests.conftest import shared_ct_labels as sample_ct_labels


def test_png_spacing_is_unknown_and_rgb_grey_is_reported(tmp_path: Path, capsys) -> None:
    grey = np.tile(np.arange(64, dtype=np.uint8), (32, 1))
    path = tmp_path / "rgb.png"
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(path)
    code, out, err = run(["info", str(path)], capsys)
    assert code == 0, err
    assert "spacing (mm)  unknown (assumed 1 mm)" in out
    assert "RGB file with three equal channels: read as greyscale" in out
    code, out, _ = run(["info", str(path), "--json"], capsys)
    assert json.loads(out)[0]["spacing_known"] is False


def test_label_maps_are_inferred_as_such(capsys) -> None:
    code, out, err = run(["info", str(sample_ct_labels()), "--json"], capsys)
    assert code == 0, err
    (doc,) = json.loads(out)
    assert (doc["modality"], doc["modality_source"]) == ("SEG", "inferred")
    assert doc["spacing_known"] is True
    code, out, _ = run(["info", str(sample_ct())], capsys)
    assert "CT (inferred from intensities)" in out and "label map" not in out
    code, out, _ = run(["info", str(sample_ct_labels())], capsys)
    assert "integer labels: read as a label map" in out


def test_deid_into_a_folder_with_a_trailing_slash(tmp_path: Path, capsys) -> None:
    import pydicom
    from pydicom.data import get_testdata_file

    src = Path(get_testdata_file("CT_small.dcm"))
    code, _, err = run(["deid", str(src), f"{tmp_path / 'out'}/"], capsys)
    assert code == 0, err
    written = tmp_path / "out" / "CT_small.dcm"
    assert written.is_file() and pydicom.dcmread(written).PatientName != "CompressedSamples^CT1"
    code, _, err = run(["deid", str(src), str(tmp_path / "out")], capsys)  # existing folder
    assert code == 2 and f"{written}: output already exists" in err  # inside it, not over it
    code, _, err = run(["deid", str(src), str(tmp_path / "single.dcm")], capsys)
    assert code == 0 and (tmp_path / "single.dcm").is_file()
