"""medm3.imaging.user_mask: one rule for the user's label map in chat and serve."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medm3.errors import InputError
from medm3.imaging.label_tables import get_table
from medm3.imaging.user_mask import MASK_MISMATCH, NOT_A_LABEL_MAP, MaskError, name_mask
from tests.doubles import volume


def _labels(shape: tuple[int, ...] = (8, 8, 4)) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    labels[1:4, 1:4, 1:3] = 1  # TotalSegmentator CT / VISTA3D id 1: spleen / liver
    labels[5:7, 5:7, 1:3] = 2
    return labels


def test_a_named_table_names_the_ids_and_the_mask_is_marked() -> None:
    scan = volume()
    mask = volume(_labels(), source="seg.nii.gz")
    named, note = name_mask(scan, mask, "vista3d")
    assert named.metadata["label_names"] == get_table("vista3d")
    assert named.metadata["content"] == "label_map"
    assert "label_names" not in mask.metadata  # the caller's image is left as it is
    assert "vista3d" in note


def test_a_json_file_names_the_ids_unless_only_builtin_tables_are_allowed(tmp_path: Path) -> None:
    table = tmp_path / "names.json"
    table.write_text(json.dumps({"1": "left thing", "2": "right thing"}))
    mask = volume(_labels(), source="seg.nii.gz")
    named, _ = name_mask(volume(), mask, table)
    assert named.metadata["label_names"] == {1: "left thing", 2: "right thing"}
    with pytest.raises(InputError, match="no built-in label table"):
        name_mask(volume(), mask, str(table), builtin_only=True)


def test_a_scan_is_not_a_label_map() -> None:
    with pytest.raises(MaskError) as info:
        name_mask(volume(), volume(seed=1, source="other_ct.nii.gz"))
    assert info.value.code == NOT_A_LABEL_MAP
    assert str(info.value).startswith("other_ct.nii.gz: is not a label map")


def test_a_mask_on_another_grid_is_refused() -> None:
    mask = volume(_labels((8, 8, 5)), shape=(8, 8, 5), source="seg.nii.gz")
    with pytest.raises(MaskError) as info:
        name_mask(volume(), mask, "vista3d")
    assert info.value.code == MASK_MISMATCH
    assert "does not fit the image" in info.value.message
