"""The native fast path of the series reader against SimpleITK, pydicom and the generic path."""

from __future__ import annotations

import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from medm3.errors import InputError
from medm3.imaging import load_image
from medm3.imaging.readers import dicom_series

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def sitk_as_ras(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a series with SimpleITK (GDCM) and bring it to nibabel's closest canonical RAS."""
    sitk = pytest.importorskip("SimpleITK")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    xyz = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    canon = nib.as_closest_canonical(nib.Nifti1Image(xyz, LPS @ affine))
    return np.asarray(canon.dataobj), canon.affine


def per_slice_intercepts(files: list[Path]) -> None:
    """Give every slice its own Rescale Intercept (so slice order matters for the rescale)."""
    for path in files:
        ds = pydicom.dcmread(path)
        ds.RescaleIntercept = str(-1024 + 3 * int(ds.InstanceNumber))
        ds.save_as(path)


@pytest.mark.parametrize("codes", ["LPS", "LPI", "RAS", "PIL", "ASR"])
def test_series_matches_simpleitk(make_series, codes: str) -> None:
    info = make_series(codes=codes)
    per_slice_intercepts(info.files)
    expected, affine = sitk_as_ras(info.folder)
    image = load_image(info.folder)
    assert image.array.shape == expected.shape
    np.testing.assert_array_equal(image.array, expected)
    np.testing.assert_allclose(image.affine, affine, atol=1e-4)
    assert image.array.dtype == np.int16


def _force_generic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dicom_series, "_native_series", lambda group: False)


@pytest.mark.parametrize(
    ("photometric", "slope", "intercept"),
    [("MONOCHROME1", 1.0, -1024.0), ("MONOCHROME2", 0.5, -1024.0), ("MONOCHROME2", 2.0, -3000.0)],
)
def test_fast_path_equals_pydicom_path(
    make_series, monkeypatch: pytest.MonkeyPatch, photometric: str, slope: float, intercept: float
) -> None:
    info = make_series(codes="PIL", slope=slope, intercept=intercept)
    for path in info.files:
        ds = pydicom.dcmread(path)
        ds.PhotometricInterpretation = photometric
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        ds.save_as(path)
    fast = load_image(info.folder)
    _force_generic(monkeypatch)
    slow = load_image(info.folder)
    assert fast.array.dtype == slow.array.dtype
    np.testing.assert_array_equal(fast.array, slow.array)
    np.testing.assert_array_equal(fast.affine, slow.affine)
    assert fast.metadata == slow.metadata
    assert fast.array.dtype == (np.int16 if slope == round(slope) else np.float32)


def test_unused_high_bits_are_cleared_like_pydicom(make_series) -> None:
    """BitsStored 12 of 16, signed: garbage in the high bits must not reach the values."""
    info = make_series(intercept=0.0, volume=np.full((6, 5, 4), 100, dtype=np.int16))
    rng = np.random.default_rng(3)
    for path in info.files:
        ds = pydicom.dcmread(path)
        values = rng.integers(-2048, 2048, size=(ds.Rows, ds.Columns)).astype(np.int16)
        junk = (rng.integers(0, 16, size=values.shape) << 12).astype(np.uint16)
        ds.PixelData = ((values.view(np.uint16) & 0x0FFF) | junk).astype("<u2").tobytes()
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 1
        ds.save_as(path)
    image = load_image(info.folder)
    reference = {
        int(pydicom.dcmread(p).InstanceNumber): pydicom.dcmread(p).pixel_array for p in info.files
    }
    assert image.array.min() >= -2048 and image.array.max() < 2048
    got = sorted(int(v) for v in image.array.ravel())
    want = sorted(int(v) for arr in reference.values() for v in arr.ravel())
    assert got == want


def test_zip_equals_folder(make_series, tmp_path: Path) -> None:
    info = make_series(codes="LIP")
    per_slice_intercepts(info.files)
    archive = tmp_path / "series.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in info.files:
            zf.write(path, f"exam/{path.name}")
        zf.writestr("exam/README.txt", "not DICOM")
    folder, zipped = load_image(info.folder), load_image(archive)
    np.testing.assert_array_equal(zipped.array, folder.array)
    np.testing.assert_array_equal(zipped.affine, folder.affine)
    assert zipped.metadata["container"] == "zip" and zipped.metadata["skipped_files"] == 1


def test_truncated_slice_is_named(make_series) -> None:
    info = make_series()
    victim = info.files[2]
    victim.write_bytes(victim.read_bytes()[:-10])
    with pytest.raises(InputError, match="truncated") as err:
        load_image(info.folder)
    assert victim.name in str(err.value)
