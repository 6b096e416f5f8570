"""Slicing: radiological orientation, index <-> voxel mapping, aspect ratio, defaults."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from medm3.errors import InputError
from medm3.imaging.image import MedicalImage
from medm3.imaging.slicing import (
    default_slice,
    extract_slice,
    largest_slice,
    num_slices,
    resize_labels,
    slice_pixel_spacing,
    slice_to_voxel,
    square_size,
    take_slice,
    voxel_to_slice,
)

SHAPE = (5, 6, 7)  # X (left->right), Y (posterior->anterior), Z (inferior->superior)


def volume(
    array: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
) -> MedicalImage:
    return MedicalImage(
        array=array,
        spacing=spacing,
        affine=np.diag([*spacing, 1.0]),
        modality="CT",
        modality_source="caller",
        source="synthetic",
    )


def marker(x: int, y: int, z: int) -> np.ndarray:
    array = np.zeros(SHAPE, np.int16)
    array[x, y, z] = 1000
    return array


def bright_pixel(image: np.ndarray) -> tuple[int, int]:
    rows, cols = np.nonzero(image)
    assert len(rows) == 1
    return int(rows[0]), int(cols[0])


RIGHT, ANTERIOR, SUPERIOR = SHAPE[0] - 1, SHAPE[1] - 1, SHAPE[2] - 1


def test_axial_anterior_top_patient_right_on_viewer_left() -> None:
    # Right + anterior voxel -> top-left; left + posterior voxel -> bottom-right.
    image = take_slice(marker(RIGHT, ANTERIOR, 3), "axial", 3)
    assert image.shape == (SHAPE[1], SHAPE[0])
    assert bright_pixel(image) == (0, 0)
    image = take_slice(marker(0, 0, 3), "axial", 3)
    assert bright_pixel(image) == (SHAPE[1] - 1, SHAPE[0] - 1)


def test_coronal_superior_top_patient_right_on_viewer_left() -> None:
    image = take_slice(marker(RIGHT, 2, SUPERIOR), "coronal", 2)
    assert image.shape == (SHAPE[2], SHAPE[0])
    assert bright_pixel(image) == (0, 0)
    image = take_slice(marker(0, 2, 0), "coronal", 2)
    assert bright_pixel(image) == (SHAPE[2] - 1, SHAPE[0] - 1)


def test_sagittal_superior_top_anterior_on_viewer_left() -> None:
    image = take_slice(marker(1, ANTERIOR, SUPERIOR), "sagittal", 1)
    assert image.shape == (SHAPE[2], SHAPE[1])
    assert bright_pixel(image) == (0, 0)
    image = take_slice(marker(1, 0, 0), "sagittal", 1)
    assert bright_pixel(image) == (SHAPE[2] - 1, SHAPE[1] - 1)


@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
def test_slice_voxel_mapping_round_trips_and_matches_take_slice(plane: str) -> None:
    array = np.arange(np.prod(SHAPE)).reshape(SHAPE)
    for voxel in itertools.product(*(range(n) for n in SHAPE)):
        index, row, col = voxel_to_slice(voxel, plane, SHAPE)
        assert slice_to_voxel(plane, index, row, col, SHAPE) == voxel
        assert take_slice(array, plane, index)[row, col] == array[voxel]


def test_plane_names_and_counts() -> None:
    assert [num_slices(SHAPE, p) for p in ("sagittal", "coronal", "axial")] == list(SHAPE)
    assert num_slices(SHAPE, "Axial") == 7
    with pytest.raises(InputError, match="valid planes: axial, coronal, sagittal"):
        num_slices(SHAPE, "oblique")


def test_out_of_range_slice_names_valid_range() -> None:
    image = volume(np.zeros(SHAPE))
    with pytest.raises(InputError, match="valid slices are 0-6"):
        extract_slice(image, "axial", 7)
    with pytest.raises(InputError, match="valid slices are 0-4"):
        extract_slice(image, "sagittal", -1)


def test_coronal_of_thick_slices_is_three_times_taller_per_slice() -> None:
    image = volume(np.zeros((10, 12, 4)), spacing=(1.0, 1.0, 3.0))
    view = extract_slice(image, "coronal", 0)
    assert view.pixels.shape == (4, 10)
    assert view.pixel_spacing == (3.0, 1.0)
    assert square_size(view.pixels.shape, view.pixel_spacing) == (12, 10)
    assert square_size(view.pixels.shape, view.pixel_spacing, scale=2) == (24, 20)
    assert slice_pixel_spacing((0.5, 0.7, 3.0), "axial") == (0.7, 0.5)


def test_default_slice_is_middle_or_largest_labelled_area() -> None:
    mask = np.zeros(SHAPE, np.uint8)
    assert default_slice(SHAPE, "axial") == 3
    assert default_slice(SHAPE, "axial", mask) == 3  # empty mask -> middle
    mask[1, 1, 1] = 2
    mask[:3, :3, 5] = 1  # 9 voxels on axial slice 5
    mask[:, 4, 0] = 3  # 5 voxels on axial slice 0, all on coronal slice 4
    assert default_slice(SHAPE, "axial", mask) == 5
    assert largest_slice(mask, "axial", label=3) == 0
    assert largest_slice(mask, "coronal") == 4
    assert largest_slice(mask, "axial", label=7) is None
    view = extract_slice(volume(np.zeros(SHAPE)), "axial", None, mask)
    assert view.index == 5
    assert view.mask is not None and np.count_nonzero(view.mask) == 9


def test_two_d_images_have_only_axial_slice_zero() -> None:
    image = MedicalImage(np.zeros((4, 6)), (0.5, 0.5), np.eye(4), "XR", "caller", "xray.png")
    view = extract_slice(image, "axial", None)
    assert (view.index, view.count, view.pixels.shape) == (0, 1, (4, 6))
    assert extract_slice(image, "axial", 0).index == 0
    with pytest.raises(InputError, match="2D image: it has no coronal plane"):
        extract_slice(image, "coronal")
    with pytest.raises(InputError, match="only slice is 0, not 2"):
        extract_slice(image, "axial", 2)


def test_resize_labels_is_nearest_neighbour() -> None:
    labels = np.array([[0, 7], [3, 250]], np.uint8)
    out = resize_labels(labels, (6, 4))
    assert set(np.unique(out)) == {0, 3, 7, 250}
    assert out[:3, :2].tolist() == [[0, 0]] * 3
    assert out[3:, 2:].tolist() == [[250, 250]] * 3
