"""Windowing: presets, W,L parsing, data-driven windows and the uint8 maths."""

from __future__ import annotations

import numpy as np
import pytest

from medm3.errors import InputError
from medm3.imaging.image import MedicalImage
from medm3.imaging.windowing import (
    CT_PRESETS,
    Window,
    apply_window,
    parse_window,
    resolve_window,
    to_uint8_rgb,
)


def make_image(array: np.ndarray, modality: str = "CT", **metadata: object) -> MedicalImage:
    ndim = 3 if array.ndim >= 3 else 2
    return MedicalImage(
        array=array,
        spacing=(1.0,) * ndim,
        affine=np.eye(4),
        modality=modality,
        modality_source="caller",
        source="synthetic",
        metadata=dict(metadata),
    )


def test_apply_window_maps_hu_to_known_grey_levels() -> None:
    window = Window(400.0, 50.0, "soft_tissue")  # -150 .. 250 HU
    hu = np.array([-1000, -150, 50, 150, 250, 3000, -150.5, 249.9])
    out = apply_window(hu, window)
    assert out.dtype == np.uint8
    assert out.tolist() == [0, 0, 128, 191, 255, 255, 0, 255]


def test_apply_window_handles_nan_and_keeps_shape() -> None:
    out = apply_window(np.array([[np.nan, 0.0], [1.0, 2.0]]), Window(2.0, 1.0, "custom"))
    assert out.shape == (2, 2)
    assert out.tolist() == [[0, 0], [128, 255]]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("abdomen", (400, 50)),
        ("soft_tissue", (400, 50)),
        ("lung", (1500, -600)),
        ("bone", (1800, 400)),
        ("brain", (80, 40)),
    ],
)
def test_ct_presets(name: str, expected: tuple[int, int]) -> None:
    window = resolve_window(make_image(np.zeros((2, 2, 2), np.int16)), name)
    assert (window.width, window.level) == expected
    assert window.name == name
    assert CT_PRESETS[name] == expected


def test_lung_window_endpoints() -> None:
    window = resolve_window(make_image(np.zeros((2, 2, 2))), "lung")
    assert apply_window(np.array([-1350, -600, 150]), window).tolist() == [0, 128, 255]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("400,40", (400.0, 40.0)),
        (" 1500 , -600 ", (1500.0, -600.0)),
        ("80.5,40.25", (80.5, 40.25)),
        ("Lung", "lung"),
        ("soft-tissue", "soft_tissue"),
        ("AUTO", "auto"),
    ],
)
def test_parse_window_accepts(spec: str, expected: object) -> None:
    assert parse_window(spec) == expected


@pytest.mark.parametrize("spec", ["foo", "400", "0,40", "-5,40", "a,b", "1,2,3", "", "nan,1"])
def test_parse_window_rejects_with_valid_names(spec: str) -> None:
    with pytest.raises(InputError) as info:
        parse_window(spec)
    message = str(info.value)
    if "finite" not in message and "width" not in message:
        assert "soft_tissue" in message and "W,L" in message


def test_custom_window_resolves() -> None:
    window = resolve_window(make_image(np.zeros((2, 2, 2))), "400,40")
    assert (window.width, window.level, window.name) == (400.0, 40.0, "custom")
    assert window.describe() == "custom (W400 L40)"


@pytest.mark.parametrize(
    ("modality", "name"),
    [
        ("CT", "soft_tissue"),
        ("MR", "percentile"),
        ("PT", "percentile"),
        ("XR", "stored"),
        ("OT", "stored"),
        ("US", "stored"),
    ],
)
def test_auto_window_by_modality(modality: str, name: str) -> None:
    image = make_image(np.arange(27, dtype=np.int16).reshape(3, 3, 3), modality)
    assert resolve_window(image, "auto").name == name


def test_percentile_window_uses_nonzero_voxels_of_whole_volume() -> None:
    volume = np.zeros((10, 10, 10), np.float32)
    volume[..., 9] = np.arange(1, 101).reshape(10, 10)  # only the top slice has signal
    window = resolve_window(make_image(volume, "MR"), "percentile")
    low, high = np.percentile(np.arange(1, 101), [0.5, 99.5])
    assert window.low == pytest.approx(low)
    assert window.high == pytest.approx(high)


def test_percentile_window_of_empty_volume_is_safe() -> None:
    window = resolve_window(make_image(np.zeros((3, 3, 3)), "MR"), "percentile")
    assert window.width > 0


def test_stored_window_prefers_dicom_tags() -> None:
    image = make_image(np.arange(4096, dtype=np.uint16).reshape(64, 64), "XR", window=(1000, 2000))
    window = resolve_window(image, "stored")
    assert (window.width, window.level, window.name) == (1000.0, 2000.0, "stored")


def test_stored_window_uses_dtype_range_for_8_bit_data() -> None:
    image = make_image(np.full((4, 4), 100, np.uint8), "XR")
    window = resolve_window(image, "auto")
    assert (window.low, window.high) == (0.0, 255.0)
    assert apply_window(image.array, window)[0, 0] == 100


def test_stored_window_falls_back_to_data_range() -> None:
    image = make_image(np.array([[100, 300], [200, 4000]], np.uint16), "XR")
    window = resolve_window(image, "auto")
    assert (window.low, window.high) == (100.0, 4000.0)
    assert apply_window(image.array, window).tolist() == [[0, 13], [7, 255]]


def test_rgb_passes_through_unchanged() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    assert np.array_equal(to_uint8_rgb(rgb), rgb)
    assert to_uint8_rgb(np.ones((2, 2, 4), np.float32)).tolist() == [[[255] * 3] * 2] * 2
