"""NIfTI / NRRD reading, RAS reorientation, save_nifti, and bad-file errors."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medm3.errors import InputError
from medm3.imaging import MedicalImage, load_image, save_nifti

NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"


def test_real_ct_nifti(ct_path: Path) -> None:
    image = load_image(ct_path)
    assert image.array.shape == (122, 101, 30)
    assert image.spacing == pytest.approx((3.0, 3.0, 3.0))
    assert (image.modality, image.modality_source) == ("CT", "inferred")
    assert image.array.dtype == np.int16
    assert image.orientation == "RAS"
    assert image.metadata["format"] == "nifti"
    np.testing.assert_array_equal(image.array, np.asarray(nib.load(ct_path).dataobj))


def test_real_labels_keep_uint8(ct_labels_path: Path) -> None:
    labels = load_image(ct_labels_path)
    assert labels.array.dtype == np.uint8 and labels.array.shape == (122, 101, 30)
    assert int((labels.array == 5).sum()) == 38634  # liver


def test_mr_las_is_reoriented_like_closest_canonical(mr_path: Path) -> None:
    image = load_image(mr_path)
    canon = nib.as_closest_canonical(nib.load(mr_path))
    assert image.metadata["original_orientation"] == "LAS"
    assert image.orientation == "RAS"
    np.testing.assert_array_equal(image.array, np.asarray(canon.dataobj))
    np.testing.assert_allclose(image.affine, canon.affine)
    assert image.array.dtype.isnative
    assert (image.modality, image.modality_source) == ("MR", "inferred")


def test_caller_modality_overrides_inference(ct_path: Path) -> None:
    image = load_image(ct_path, modality="mri")
    assert (image.modality, image.modality_source) == ("MR", "caller")
    with pytest.raises(InputError, match="unknown modality 'spect'"):
        load_image(ct_path, modality="spect")


def test_4d_nifti_is_refused() -> None:
    with pytest.raises(InputError, match=r"is a 4D image \(shape 128x96x24x2\)") as err:
        load_image(NIBABEL_DATA / "example4d.nii.gz")
    assert "example4d.nii.gz" in str(err.value)


def test_trailing_singleton_and_2d_nifti(tmp_path: Path) -> None:
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4, 1)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "t.nii")
    assert load_image(tmp_path / "t.nii").array.shape == (2, 3, 4)
    nib.save(nib.Nifti1Image(data[:, :, 0, 0], np.eye(4)), tmp_path / "flat.nii")
    assert load_image(tmp_path / "flat.nii").array.shape == (2, 3, 1)


def test_scaled_nifti_dtype_rule(tmp_path: Path) -> None:
    data = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_slope_inter(1.0, -1024.0)
    nib.save(img, tmp_path / "int.nii")
    exact = load_image(tmp_path / "int.nii")
    assert exact.array.dtype == np.int16 and exact.array.min() == -1024
    img.header.set_slope_inter(0.5, 0.0)
    nib.save(img, tmp_path / "float.nii")
    scaled = load_image(tmp_path / "float.nii")
    assert scaled.array.dtype == np.float32 and scaled.array.max() == pytest.approx(29.5)


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.nii.gz"
    empty.touch()
    with pytest.raises(InputError, match=r"empty\.nii\.gz: file is empty \(0 bytes\)"):
        load_image(empty)


def test_truncated_nii_gz(tmp_path: Path, ct_path: Path) -> None:
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(ct_path.read_bytes()[:50_000])
    with pytest.raises(InputError, match="truncated or corrupt") as err:
        load_image(cut)
    assert str(cut) in str(err.value) and "\n" not in str(err.value)


def test_png_renamed_nii(tmp_path: Path, cxr_png_path: Path) -> None:
    fake = tmp_path / "scan.nii"
    fake.write_bytes(cxr_png_path.read_bytes())
    with pytest.raises(InputError, match=r"scan\.nii: the name says NIfTI .* content is a PNG"):
        load_image(fake)


def test_text_file_named_nii_gz(tmp_path: Path) -> None:
    bad = tmp_path / "notes.nii.gz"
    bad.write_bytes(gzip.compress(b"just some text\n" * 100))
    with pytest.raises(InputError, match="cannot read this file: tried nifti"):
        load_image(bad)


def test_unrecognised_format_lists_attempts(tmp_path: Path) -> None:
    bad = tmp_path / "data.xyz"
    bad.write_bytes(os.urandom(3000))
    with pytest.raises(InputError, match=r"unrecognised format.*tried dicom \(.*\), .*Supported"):
        load_image(bad)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or folder"):
        load_image(tmp_path / "nope.nii")


def test_nrrd_and_mha_via_simpleitk(tmp_path: Path, ct_path: Path) -> None:
    import SimpleITK as sitk

    ref = load_image(ct_path)
    for name in ("ct.nrrd", "ct.mha"):
        sitk.WriteImage(sitk.ReadImage(str(ct_path)), str(tmp_path / name))
        image = load_image(tmp_path / name)
        np.testing.assert_array_equal(image.array, ref.array)
        np.testing.assert_allclose(image.affine, ref.affine, atol=1e-3)
        assert image.modality == "CT"


def test_save_nifti_roundtrip_and_dtypes(tmp_path: Path, ct_path: Path) -> None:
    image = load_image(ct_path)
    labels = image.with_array(image.array > 0)
    out = save_nifti(labels, tmp_path / "mask.nii")
    again = load_image(out)
    assert again.array.dtype == np.uint8
    np.testing.assert_array_equal(again.array, labels.array)
    np.testing.assert_allclose(again.affine, image.affine)
    rgb = image.with_array(np.stack([image.array] * 3, axis=-1))
    back = load_image(save_nifti(rgb, tmp_path / "rgb.nii.gz"))
    assert back.array.shape == (122, 101, 30, 3)


def test_save_nifti_refuses_2d_and_bad_suffix(tmp_path: Path) -> None:
    flat = MedicalImage(np.zeros((4, 4)), (1.0, 1.0), np.eye(4), "XR", "inferred", "x.png", {})
    with pytest.raises(InputError, match="2D"):
        save_nifti(flat, tmp_path / "x.nii")
    with pytest.raises(InputError, match=r"\.nii or \.nii\.gz"):
        save_nifti(flat, tmp_path / "x.png")
