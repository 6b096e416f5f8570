"""DICOM series with missing slices: the refusal says how to go on; ``largest`` and ``fill``."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medm3.errors import InputError
from medm3.imaging import load_image
from medm3.imaging.readers import dicom_series
from medm3.imaging.readers.dicom_gaps import GAPS_ENV, resolve_gap_policy

from .conftest import synthetic_volume

AFFINE = np.array(
    [[0.8, 0, 0, -20.0], [0, 0.9, 0, 10.0], [0, 0, 2.5, 30.0], [0, 0, 0, 1]], dtype=float
)
#: RAS axis the slices of each orientation are stacked along.
SLICE_AXIS = {"LPS": 2, "LPI": 2, "PIL": 0, "LIP": 1}


@pytest.fixture(autouse=True)
def _no_gap_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(GAPS_ENV, raising=False)


def ras_index(path: Path, axis: int) -> int:
    """Index along ``axis`` of the RAS array that the slice in ``path`` must land on."""
    lps = np.asarray([float(v) for v in pydicom.dcmread(path).ImagePositionPatient])
    ras = np.array([-lps[0], -lps[1], lps[2], 1.0])
    return round(float((np.linalg.inv(AFFINE) @ ras)[axis]))


def series_without(make_series, codes: str, drop: set[int], n: int = 8):
    """``n`` slices along the slice axis of ``codes``, those at RAS indices ``drop`` removed."""
    axis = SLICE_AXIS[codes]
    shape = [6, 5, 4]
    shape[axis] = n
    info = make_series(codes=codes, volume=synthetic_volume(tuple(shape)), affine=AFFINE)
    removed = [f for f in info.files if ras_index(f, axis) in drop]
    assert len(removed) == len(drop)
    for f in removed:
        f.unlink()
    return info, axis, sorted(f.name for f in removed)


def take(volume: np.ndarray, axis: int, indices) -> np.ndarray:
    return np.take(volume, list(indices), axis=axis)


def test_default_refusal_names_the_gap_and_the_way_on(make_series) -> None:
    info, _, _ = series_without(make_series, "LPS", {3})
    with pytest.raises(InputError) as err:
        load_image(info.folder)
    message = err.value.message
    assert "missing slice(s) at 37.50 mm" in message  # z = 30 + 3 x 2.5
    assert "--allow-gaps largest|fill" in message and "MEDM3_ALLOW_GAPS" in message
    assert "\n" not in message and len(message) <= 300


def test_uneven_spacing_refusal_offers_largest(make_series) -> None:
    info = make_series(volume=synthetic_volume((6, 5, 6)), affine=AFFINE)
    top = max(info.files, key=lambda f: ras_index(f, 2))
    ds = pydicom.dcmread(top)
    ds.ImagePositionPatient[2] = float(ds.ImagePositionPatient[2]) + 1.2  # 3.7 mm step
    ds.save_as(top)
    with pytest.raises(InputError, match=r"non-uniform.*--allow-gaps largest"):
        load_image(info.folder)
    with pytest.raises(InputError, match="cannot fill it on a regular grid"):
        load_image(info.folder, allow_gaps="fill")
    image = load_image(info.folder, allow_gaps="largest")  # the 5 evenly spaced slices
    np.testing.assert_array_equal(image.array, info.volume[:, :, :5])
    assert image.metadata["gaps"]["left_out"] == [top.name]


@pytest.mark.parametrize("codes", ["LPS", "LPI", "PIL", "LIP"])
def test_largest_keeps_the_longest_even_run_with_its_geometry(make_series, codes: str) -> None:
    # RAS indices 0-1 | gap 2 | 3-4 | gap 5 | 6-7 ... make the runs 0-2 and 4-7:
    info, axis, removed = series_without(make_series, codes, {3})
    image = load_image(info.folder, allow_gaps="largest")
    np.testing.assert_array_equal(image.array, take(info.volume, axis, range(4, 8)))
    expected = info.affine.copy()
    expected[:3, 3] = (info.affine @ np.r_[np.eye(4)[axis][:3] * 4, 1])[:3]
    np.testing.assert_allclose(image.affine, expected, atol=1e-4)
    gaps = image.metadata["gaps"]
    assert gaps["policy"] == "largest" and gaps["slices_found"] == 7 and gaps["slices_used"] == 4
    left_out = sorted(Path(p).name for p in gaps["left_out"])
    assert len(left_out) == 3 and not set(left_out) & set(removed)
    assert "4 of 7 slices" in gaps["note"]
    assert "filled_slices" not in image.metadata


def test_largest_tie_keeps_the_first_run(make_series) -> None:
    info, axis, _ = series_without(make_series, "LPS", {3}, n=7)  # runs 0-2 and 4-6
    image = load_image(info.folder, allow_gaps="largest")
    np.testing.assert_array_equal(image.array, take(info.volume, axis, range(0, 3)))
    np.testing.assert_allclose(image.affine, info.affine, atol=1e-4)


@pytest.mark.parametrize("codes", ["LPS", "LPI", "PIL", "LIP"])
def test_fill_gives_the_full_grid_and_marks_the_copies(make_series, codes: str) -> None:
    info, axis, _ = series_without(make_series, codes, {2, 3, 6})
    image = load_image(info.folder, allow_gaps="fill")
    assert image.array.shape == info.volume.shape
    np.testing.assert_allclose(image.affine, info.affine, atol=1e-4)
    real = [0, 1, 4, 5, 7]
    np.testing.assert_array_equal(take(image.array, axis, real), take(info.volume, axis, real))
    assert image.metadata["filled_slices"] == [2, 3, 6]
    gaps = image.metadata["gaps"]
    assert gaps["axis"] == axis and gaps["slices_used"] == 5
    # Nearest real slice; on a tie (6 lies between 5 and 7) the first along the slice
    # normal, which points to -Y (P) for the coronal LIP stack.
    assert gaps["copied_from"] == {2: 1, 3: 4, 6: 7 if codes == "LIP" else 5}
    for filled, source in gaps["copied_from"].items():
        np.testing.assert_array_equal(
            take(image.array, axis, [filled]), take(info.volume, axis, [source])
        )
    summary = image.summary()
    assert summary["filled_slices"] == [2, 3, 6] and summary["gaps"]["policy"] == "fill"


def test_fill_through_the_pydicom_path_and_from_a_zip(make_series, monkeypatch) -> None:
    info, _, _ = series_without(make_series, "LPS", {2, 3})
    fast = load_image(info.folder, allow_gaps="fill")
    archive = info.folder.parent / "series.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in info.folder.iterdir():
            zf.write(f, f.name)
    zipped = load_image(archive, allow_gaps="fill")  # repeated in-memory members
    monkeypatch.setattr(dicom_series, "_native_series", lambda group: False)
    decoded = load_image(info.folder, allow_gaps="fill")
    for image in (zipped, decoded):
        np.testing.assert_array_equal(image.array, fast.array)
        assert image.metadata["filled_slices"] == [2, 3]


def test_fill_is_counted_against_the_pixel_limit(make_series) -> None:
    from medm3.imaging.limits import ReadLimits

    info, _, _ = series_without(make_series, "LPS", {2, 3, 4, 5})
    per_slice = 6 * 5
    limits = ReadLimits(max_pixels=per_slice * 6)  # the 4 real slices fit, the 8 of the grid not
    with pytest.raises(InputError, match="8 slices"):
        load_image(info.folder, allow_gaps="fill", limits=limits)


def test_policy_from_the_environment(make_series, monkeypatch, caplog) -> None:
    info, _, _ = series_without(make_series, "LPS", {3})
    monkeypatch.setenv(GAPS_ENV, "fill")
    with caplog.at_level("WARNING", logger="medm3.imaging"):
        image = load_image(info.folder)
    assert image.metadata["filled_slices"] == [3]
    assert any("filled with a copy of the nearest real slice" in r.message for r in caplog.records)
    with pytest.raises(InputError, match="missing slice"):
        load_image(info.folder, allow_gaps="refuse")  # the argument wins over the variable
    monkeypatch.setenv(GAPS_ENV, "sometimes")
    with pytest.raises(InputError, match="MEDM3_ALLOW_GAPS must be one of"):
        load_image(info.folder)


def test_resolve_gap_policy() -> None:
    assert resolve_gap_policy(None, {}) == "refuse"
    assert resolve_gap_policy(None, {GAPS_ENV: " Largest "}) == "largest"
    assert resolve_gap_policy("FILL", {GAPS_ENV: "largest"}) == "fill"
    with pytest.raises(InputError, match="allow_gaps must be one of"):
        resolve_gap_policy("nearest", {})


def test_a_regular_series_is_untouched_by_a_policy(make_series) -> None:
    info = make_series()
    image = load_image(info.folder, allow_gaps="fill")
    np.testing.assert_array_equal(image.array, info.volume)
    assert "gaps" not in image.metadata and "filled_slices" not in image.metadata


def test_multiframe_gap_follows_the_policy(tmp_path: Path, dicom_builders) -> None:
    volume = synthetic_volume((6, 5, 5))
    path = dicom_builders.write_enhanced(tmp_path / "mf.dcm", volume, AFFINE, shuffle=False)
    ds = pydicom.dcmread(path)
    last = ds.PerFrameFunctionalGroupsSequence[-1].PlanePositionSequence[0]
    last.ImagePositionPatient[2] = float(last.ImagePositionPatient[2]) + 2 * 2.5  # 2 missing
    ds.save_as(path)
    with pytest.raises(InputError, match="--allow-gaps"):
        load_image(path)
    image = load_image(path, allow_gaps="fill")
    assert image.array.shape == (6, 5, 7) and image.metadata["filled_slices"] == [4, 5]
    np.testing.assert_array_equal(image.array[:, :, :4], volume[:, :, :4])
    np.testing.assert_array_equal(image.array[:, :, 6], volume[:, :, 4])
    largest = load_image(path, allow_gaps="largest")
    np.testing.assert_array_equal(largest.array, volume[:, :, :4])
