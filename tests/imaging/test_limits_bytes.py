"""Byte limits, capped gzip reading and header-stage refusals (issue 11)."""

from __future__ import annotations

import gzip
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medm3.errors import InputError
from medm3.imaging import limits as limits_mod
from medm3.imaging.io import load_image
from medm3.imaging.limits import ReadLimits, check_pixels, read_gzip_capped
from medm3.imaging.orientation import check_affine


def test_read_gzip_capped_returns_exactly_the_prefix(tmp_path: Path) -> None:
    data = np.random.default_rng(0).bytes(300_000)
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(data))
    assert bytes(read_gzip_capped(path, 123_456, ReadLimits())) == data[:123_456]
    assert bytes(read_gzip_capped(path, len(data), ReadLimits())) == data


def test_read_gzip_capped_multi_member(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(b"a" * 1000) + gzip.compress(b"b" * 1000))
    assert bytes(read_gzip_capped(path, 2000, ReadLimits())) == b"a" * 1000 + b"b" * 1000


def test_read_gzip_capped_truncated_and_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(bytes(1000)))
    with pytest.raises(InputError, match="declares 5,000 bytes but the file holds 1,000"):
        read_gzip_capped(path, 5000, ReadLimits())
    path.write_bytes(b"\x1f\x8b\x08\x00" + b"garbage" * 20)
    with pytest.raises(InputError, match="corrupt"):
        read_gzip_capped(path, 100, ReadLimits())


def test_read_gzip_capped_refuses_a_bomb_early(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(limits_mod, "GZIP_RATIO_MIN_BYTES", 1 << 20)
    path = tmp_path / "bomb.gz"
    path.write_bytes(gzip.compress(bytes(64 << 20), 9))
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="inflates more than 50:1"):
            read_gzip_capped(path, 64 << 20, ReadLimits(max_gzip_ratio=50))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 24 << 20  # stopped long before the 64 MiB


def test_check_pixels_counts_bytes() -> None:
    lim = ReadLimits(max_pixels=10**9, max_bytes=1000)
    check_pixels(250, lim, "f", "250", bytes_per_sample=4)
    with pytest.raises(InputError, match="MEDM3_MAX_IMAGE_BYTES"):
        check_pixels(251, lim, "f", "251", bytes_per_sample=4)
    with pytest.raises(InputError, match="zero-length"):
        check_pixels(0, lim, "f", "0 x 4")


def test_env_overrides_new_limits() -> None:
    lim = ReadLimits.from_env({"MEDM3_MAX_IMAGE_BYTES": "1_000", "MEDM3_MAX_GZIP_RATIO": "12.5"})
    assert lim.max_bytes == 1000 and lim.max_gzip_ratio == 12.5


def test_small_file_declaring_2gb_allocates_nothing(tmp_path: Path) -> None:
    from tests.hostile.generators_cli import nifti_declares_huge_gz

    path = nifti_declares_huge_gz(tmp_path)
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match="truncated"):
            load_image(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("scaled", [False, True])
def test_gz_reading_matches_nibabel(tmp_path: Path, endian: str, scaled: bool) -> None:
    """The capped .nii.gz path gives nibabel's values (byte order, scaling, Fortran order)."""
    rng = np.random.default_rng(1)
    data = rng.integers(-500, 500, size=(7, 5, 3)).astype(np.dtype(f"{endian}i2"))
    img = nib.Nifti1Image(data, np.diag([0.5, 0.7, 2.0, 1.0]))
    if scaled:
        img.header.set_slope_inter(0.5, -3.0)
    path = tmp_path / "v.nii.gz"
    nib.save(img, str(path))
    reference = nib.load(str(path)).get_fdata()
    ours = load_image(path)
    assert ours.orientation == "RAS"
    np.testing.assert_allclose(ours.array, reference)


def test_vector_intent_5d_is_channels_but_plain_5d_refused(tmp_path: Path) -> None:
    data = np.arange(4 * 4 * 3 * 1 * 2, dtype=np.float32).reshape(4, 4, 3, 1, 2)
    vec = nib.Nifti1Image(data, np.eye(4))
    vec.header.set_intent("vector")
    nib.save(vec, str(tmp_path / "vec.nii.gz"))
    assert load_image(tmp_path / "vec.nii.gz").array.shape == (4, 4, 3, 2)
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "plain.nii.gz"))
    with pytest.raises(InputError, match="5D image"):
        load_image(tmp_path / "plain.nii.gz")


def test_check_affine() -> None:
    check_affine(np.diag([1.0, 2.0, 3.0, 1.0]))
    with pytest.raises(InputError, match="singular"):
        check_affine(np.diag([1.0, 0.0, 3.0, 1.0]), "x.nii")
    with pytest.raises(InputError, match="not finite"):
        check_affine(np.full((4, 4), np.nan))


def test_nan_value_range(tmp_path: Path) -> None:
    data = np.full((4, 4, 2), np.nan, np.float32)
    data[0, 0, 0], data[1, 1, 1] = -2.0, 5.0
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / "n.nii.gz"))
    image = load_image(tmp_path / "n.nii.gz")
    assert image.value_range == (-2.0, 5.0)
    assert image.summary()["nonfinite_values"] == data.size - 2


def test_series_on_single_file_refused(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 2), np.int16), np.eye(4)), str(tmp_path / "a.nii"))
    assert load_image(tmp_path / "a.nii", series=0).array.shape == (4, 4, 2)
    with pytest.raises(InputError, match="one series"):
        load_image(tmp_path / "a.nii", series=3)
