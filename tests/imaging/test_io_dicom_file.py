"""Single DICOM files: HU, MONOCHROME1, VOI LUT/window, colour, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels import apply_voi_lut
from pydicom.sequence import Sequence

from medm3.errors import InputError
from medm3.imaging import load_image

TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"  # never download
CT_SMALL = TEST_FILES / "CT_small.dcm"
MR_SMALL = TEST_FILES / "MR_small.dcm"


def test_ct_small_is_2d_in_hounsfield_units() -> None:
    image = load_image(CT_SMALL)
    raw = pydicom.dcmread(CT_SMALL)
    expected = raw.pixel_array.astype(np.int32) * int(raw.RescaleSlope) + int(raw.RescaleIntercept)
    assert not image.is_volume and image.array.shape == (128, 128)
    assert image.array.dtype == np.int16
    for r, c in [(0, 0), (64, 64), (10, 100), (127, 5)]:
        assert image.array[r, c] == expected[r, c]
    np.testing.assert_array_equal(image.array, expected)
    assert image.array[:8, :8].mean() < -800  # lung (upper left corner)
    assert image.array[64:68, 58:62].mean() > 500  # vertebra
    assert image.modality == "CT" and image.modality_source == "dicom"
    assert image.spacing == pytest.approx((0.661468, 0.661468))
    np.testing.assert_allclose(np.diag(image.affine), [0.661468, 0.661468, 1, 1])


def test_shared_monochrome1_cxr_is_inverted(cxr_mono1_path: Path) -> None:
    image = load_image(cxr_mono1_path)
    raw = pydicom.dcmread(cxr_mono1_path).pixel_array.astype(np.int64)
    np.testing.assert_array_equal(image.array, raw.max() + raw.min() - raw)
    assert image.array.dtype == raw.dtype or image.array.dtype == np.uint8
    assert image.metadata["photometric"] == "MONOCHROME1"
    assert image.metadata["inverted"] is True
    assert image.metadata["bits_stored"] == 8
    assert image.modality == "XR" and image.metadata["modality_tag"] == "CR"
    assert image.spacing == pytest.approx((0.168, 0.168))


def test_window_is_stored_as_width_level() -> None:
    image = load_image(MR_SMALL)
    assert image.metadata["window"] == (1600.0, 600.0)
    assert image.metadata["photometric"] == "MONOCHROME2"


def _mono1_copy(tmp_path: Path, **tags) -> Path:
    ds = pydicom.dcmread(MR_SMALL)
    ds.PhotometricInterpretation = "MONOCHROME1"
    for key, value in tags.items():
        setattr(ds, key, value)
    out = tmp_path / "mono1.dcm"
    ds.save_as(out)
    return out


def test_monochrome1_window_level_is_inverted(tmp_path: Path) -> None:
    path = _mono1_copy(tmp_path, WindowCenter=[600, 300], WindowWidth=[1600, 800])
    image = load_image(path)
    raw = pydicom.dcmread(MR_SMALL).pixel_array.astype(np.int64)
    pivot = raw.min() + raw.max()
    np.testing.assert_array_equal(image.array, pivot - raw)
    assert image.metadata["window"] == (1600.0, pivot - 600.0)  # first value of multi-valued


def test_voi_lut_sequence_is_applied_before_inversion(tmp_path: Path) -> None:
    lut = Dataset()
    lut.LUTDescriptor = [4096, 0, 16]
    curve = [int(v) for v in np.sqrt(np.arange(4096) / 4095) * 65535]  # non-linear
    lut.add_new(0x00283006, "US", curve)  # LUT Data
    path = _mono1_copy(tmp_path, VOILUTSequence=Sequence([lut]))
    ds = pydicom.dcmread(path)
    expected = np.asarray(apply_voi_lut(ds.pixel_array, ds, index=0)).astype(np.int64)
    image = load_image(path)
    assert image.metadata["voi_lut_applied"] is True
    assert image.metadata["bits_stored"] == 16
    assert "window" not in image.metadata
    np.testing.assert_array_equal(image.array, expected.max() + expected.min() - expected)


def test_dicom_without_suffix_or_preamble(tmp_path: Path) -> None:
    data = Path(CT_SMALL).read_bytes()
    assert data[128:132] == b"DICM"
    bare = tmp_path / "IM0001"
    bare.write_bytes(data[132:])  # file meta, but no preamble / DICM marker
    np.testing.assert_array_equal(load_image(bare).array, load_image(CT_SMALL).array)
    shutil.copy(CT_SMALL, tmp_path / "IM0002")
    assert load_image(tmp_path / "IM0002").modality == "CT"


def test_truncated_pixel_data(tmp_path: Path) -> None:
    data = Path(CT_SMALL).read_bytes()
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(data[: len(data) - 5000])
    with pytest.raises(InputError, match="truncated") as err:
        load_image(cut)
    assert str(cut) in str(err.value) and "\n" not in str(err.value)


def test_non_image_dicom() -> None:
    with pytest.raises(InputError, match="not an image"):
        load_image(TEST_FILES / "rtplan.dcm")


def test_rgb_and_palette_dicom_are_2d_rgb() -> None:
    rgb = load_image(TEST_FILES / "SC_rgb_rle.dcm")
    assert rgb.array.shape == (100, 100, 3) and rgb.array.dtype == np.uint8
    assert rgb.modality == "OT"
    palette = load_image(TEST_FILES / "examples_palette.dcm")
    assert palette.array.ndim == 3 and palette.array.shape[-1] == 3
    assert palette.modality == "US"


def test_rtdose_multiframe_is_a_volume() -> None:
    image = load_image(TEST_FILES / "rtdose.dcm")
    assert image.is_volume and image.orientation == "RAS"
    assert image.array.dtype == np.float32  # DoseGridScaling applied


def test_modality_tag_mapping_and_override(tmp_path: Path) -> None:
    ds = pydicom.dcmread(MR_SMALL)
    ds.Modality = "DX"
    path = tmp_path / "dx.dcm"
    ds.save_as(path)
    image = load_image(path)
    assert (image.modality, image.modality_source) == ("XR", "dicom")
    forced = load_image(path, "MRI")
    assert (forced.modality, forced.modality_source) == ("MR", "caller")
    ds.Modality = "NM"
    ds.save_as(path)
    assert load_image(path).modality == "OT"
    del ds.Modality
    ds.save_as(path)
    assert load_image(path).modality_source == "inferred"


def test_dicom_pixel_limit_checked_from_header() -> None:
    from medm3.imaging.limits import ReadLimits

    with pytest.raises(InputError, match="128 x 128 x 1 frame"):
        load_image(CT_SMALL, limits=ReadLimits(max_pixels=1000))
