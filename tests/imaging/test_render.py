"""render_slice: synthetic geometry checks and real CT / CXR / MR renders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medm3.errors import InputError
from medm3.imaging.image import MedicalImage
from medm3.imaging.labels import load_label_map
from medm3.imaging.overlay import label_color
from medm3.imaging.render import auto_scale, render_slice
from medm3.imaging.slicing import largest_slice, voxel_to_slice


def volume(
    array: np.ndarray, spacing: tuple[float, ...] = (1.0, 1.0, 1.0), modality: str = "CT"
) -> MedicalImage:
    return MedicalImage(
        array, spacing, np.diag([*spacing, 1.0]), modality, "caller", "synthetic.nii.gz"
    )


def nifti(path: Path, modality: str) -> MedicalImage:
    img = nib.as_closest_canonical(nib.load(path))
    spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
    return MedicalImage(np.asarray(img.dataobj), spacing, img.affine, modality, "caller", str(path))


def load_image_or_skip() -> Any:
    from medm3.imaging.io import load_image  # a broken import fails the test

    return load_image


def synthetic_ct() -> tuple[MedicalImage, np.ndarray]:
    ct = np.full((20, 16, 6), -1000, np.int16)
    ct[4:16, 3:13, :] = 50  # soft tissue block
    mask = np.zeros(ct.shape, np.uint8)
    mask[5:10, 4:8, 1:5] = 5
    mask[11:15, 8:12, 4] = 2  # only on axial slice 4
    return volume(ct), mask


def test_render_synthetic_ct_with_overlay_and_legend() -> None:
    image, mask = synthetic_ct()
    out = render_slice(image, mask=mask, label_names={5: "liver"}, scale=4)
    info = out.info["medm3"]
    assert info["plane"] == "axial" and info["index"] == 4  # largest labelled area
    assert info["kind"] == "volume"
    assert info["window"]["name"] == "soft_tissue"
    assert info["image_size"] == [80, 64]  # 20 cols (X) x 16 rows (Y), x4
    assert info["labels_in_slice"] == [2, 5]
    assert [(e["id"], e["name"]) for e in info["legend"]] == [(2, "label 2"), (5, "liver")]
    assert out.mode == "RGB" and out.width > 80 and out.height >= 64
    plain = render_slice(image, mask=mask, scale=4, legend=False)
    assert plain.size == (80, 64)
    assert render_slice(image, scale=4).size == (80, 64)


def test_overlay_lands_on_the_labelled_voxels() -> None:
    image, mask = synthetic_ct()
    out = np.asarray(render_slice(image, index=2, mask=mask, legend=False, scale=1, alpha=1.0))
    _, row, col = voxel_to_slice((7, 5, 2), "axial", mask.shape)
    assert tuple(out[row, col]) == label_color(5)
    _, row, col = voxel_to_slice((0, 0, 2), "axial", mask.shape)
    assert tuple(out[row, col]) == (0, 0, 0)  # air is black in the soft-tissue window


def test_legend_scope_volume_lists_labels_absent_from_slice() -> None:
    image, mask = synthetic_ct()
    info = render_slice(image, index=2, mask=mask, scale=2).info["medm3"]
    assert [e["id"] for e in info["legend"]] == [5]
    info = render_slice(image, index=2, mask=mask, scale=2, legend_scope="volume").info["medm3"]
    assert [e["id"] for e in info["legend"]] == [2, 5]


def test_thick_slices_render_with_physical_aspect() -> None:
    image = volume(np.zeros((10, 12, 4), np.int16), spacing=(1.0, 1.0, 3.0))
    out = render_slice(image, plane="coronal", scale=1)
    assert out.size == (10, 12)  # 4 slices x 3 mm -> 12 rows of 1 mm
    assert auto_scale((12, 10)) == pytest.approx(512 / 12)
    assert auto_scale((100, 4000)) == pytest.approx(2048 / 4000)
    assert auto_scale((100, 250)) == pytest.approx(256 / 100)  # short side boosted to 256
    # A thin slab (10 slices x 3 mm by 175 mm): a proportionate strip, not 1498 x 256.
    assert auto_scale((30, 175)) == pytest.approx(768 / 175)
    assert auto_scale((30, 122)) == pytest.approx(768 / 122)


def test_rgb_image_is_rendered_as_is() -> None:
    rgb = np.random.default_rng(1).integers(0, 256, (8, 10, 3), dtype=np.uint8)
    image = MedicalImage(rgb, (1.0, 1.0), np.eye(4), "OT", "caller", "slide.png")
    out = render_slice(image, scale=1, window="lung")
    assert np.array_equal(np.asarray(out), rgb)
    assert out.info["medm3"]["window"] is None


def test_invalid_arguments() -> None:
    image, mask = synthetic_ct()
    with pytest.raises(InputError, match="alpha"):
        render_slice(image, alpha=1.5)
    with pytest.raises(InputError, match="valid windows"):
        render_slice(image, window="nope")
    with pytest.raises(InputError, match="valid slices are 0-5"):
        render_slice(image, index=6)
    with pytest.raises(InputError, match="mask grid does not match image"):
        render_slice(image, mask=mask[:, :, :3])


def test_real_ct_liver_slice_with_labels(
    ct_path: Path, ct_labels_path: Path, ct_label_names_path: Path, tmp_path: Path
) -> None:
    ct = nifti(ct_path, "CT")
    labels = nifti(ct_labels_path, "OT")
    names = load_label_map(ct_label_names_path)
    index = largest_slice(labels.array, "axial", label=5)
    out = render_slice(ct, index=index, mask=labels, label_names=names)
    info = out.info["medm3"]
    assert info["index"] == index
    # 122 x 101 voxels of 3 mm -> long side enlarged to 512 px.
    assert info["image_size"] == [512, 424]
    assert out.height == 424 and out.width > 512
    assert 5 in info["labels_in_slice"]
    assert "liver" in [e["name"] for e in info["legend"]]
    path = tmp_path / "liver.png"
    out.save(path)
    with Image.open(path) as png:
        assert png.size == out.size
    # A liver voxel is drawn in (blended) liver orange: more red than blue.
    x, y = (int(v[0]) for v in np.nonzero(labels.array[:, :, index] == 5))
    _, row, col = voxel_to_slice((x, y, index), "axial", labels.array.shape)
    zoom_r, zoom_c = info["zoom"]
    r, _g, b = np.asarray(out)[int((row + 0.5) * zoom_r), int((col + 0.5) * zoom_c)]
    assert int(r) > int(b) + 40


def test_real_mr_percentile_window_shared_by_slices(mr_path: Path) -> None:
    mr = nifti(mr_path, "MR")
    a = render_slice(mr, plane="sagittal", index=10).info["medm3"]["window"]
    b = render_slice(mr, plane="axial", index=3).info["medm3"]["window"]
    assert a == b and a["name"] == "percentile"


def test_monochrome1_cxr_renders_low_stored_values_bright(cxr_mono1_path: Path) -> None:
    # MONOCHROME1 means "low stored value = white". The sample is torchxrayvision's fake
    # MONOCHROME1 file (MONOCHROME2 pixels re-tagged), so honouring the tag shows it
    # inverted; what must hold is that rendered grey falls as the stored value rises.
    import pydicom

    load_image = load_image_or_skip()
    stored = pydicom.dcmread(cxr_mono1_path).pixel_array.astype(float)
    out = render_slice(load_image(cxr_mono1_path), scale=1, legend=False)
    rendered = np.asarray(out.convert("L"), dtype=float)
    assert rendered.shape == stored.shape
    assert np.corrcoef(rendered.ravel(), stored.ravel())[0, 1] < -0.95
    assert out.info["medm3"]["window"]["name"] == "stored"
