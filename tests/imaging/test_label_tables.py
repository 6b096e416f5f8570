"""Built-in label tables and label-map auto-detection."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medm3.errors import InputError
from medm3.imaging.label_tables import (
    detect_labels,
    embedded_label_table,
    get_table,
    resolve_labels,
    table_names,
)
from tests.conftest import shared_ct as sample_ct
from tests.conftest import shared_ct_labels as sample_ct_labels
from tests.conftest import shared_file


def test_tables_have_the_published_sizes() -> None:
    assert table_names() == ["totalseg-ct", "totalseg-mr", "vista3d", "brats"]
    ct, mr = get_table("totalseg-ct"), get_table("totalseg-mr")
    assert sorted(ct) == list(range(1, 118)) and sorted(mr) == list(range(1, 51))
    assert (ct[5], ct[1], ct[117]) == ("liver", "spleen", "costal_cartilages")
    assert get_table("vista3d")[1] == "liver"
    brats = get_table("BRATS")
    assert sorted(brats) == [1, 2, 4] and "edema" in brats[2] and "enhancing" in brats[4]


def test_totalseg_ct_matches_the_shared_reference_table() -> None:
    """The shared data's label JSON came with TotalSegmentator's own test output."""
    ref = json.loads(shared_file("ct/totalseg_v2_labels.json").read_text())
    assert get_table("totalseg-ct") == {int(k): v for k, v in ref.items()}


def test_totalseg_tables_match_the_embedded_table_of_real_output() -> None:
    """TotalSegmentator's own output file embeds its class names: they must agree."""
    embedded = embedded_label_table(shared_file("ct/ct_abdomen_3mm_totalseg.nii.gz"))
    assert embedded == get_table("totalseg-ct")
    assert embedded_label_table(sample_ct()) is None  # a CT has no label table


def test_resolve_labels_names_files_and_errors(tmp_path: Path) -> None:
    assert resolve_labels("totalseg_ct") == get_table("totalseg-ct")
    f = tmp_path / "names.json"
    f.write_text('{"1": "a", "2": "b"}')
    assert resolve_labels(f) == {1: "a", 2: "b"}
    with pytest.raises(InputError, match=r"not a label table name nor a file.*totalseg-ct"):
        resolve_labels("totalsegct")
    with pytest.raises(InputError, match="label map not found"):
        resolve_labels(tmp_path / "missing.json")


def test_detect_prefers_the_embedded_table() -> None:
    import nibabel as nib

    labels = shared_file("ct/ct_abdomen_3mm_totalseg.nii.gz")  # TotalSegmentator's output
    ids = np.unique(np.asarray(nib.load(labels).dataobj))
    found = detect_labels(ids, path=labels, modality="CT")
    assert found.source == "embedded" and found.names is not None
    assert found.names[5] == "liver"


def test_detect_from_ids_and_modality(tmp_path: Path) -> None:
    vista = detect_labels([0, 1, 3, 125], modality="CT")
    assert (vista.source, vista.table) == ("table", "vista3d")
    brats = detect_labels([0, 1, 2, 4])
    assert brats.table == "brats" and brats.names == get_table("brats")
    mr = detect_labels([1, 5, 40], modality="MR")
    assert mr.table == "totalseg-mr"
    ambiguous = detect_labels([1, 5, 100], modality="CT")
    assert ambiguous.names is None
    assert ambiguous.candidates == ["totalseg-ct", "vista3d"]
    assert "pass --labels NAME" in ambiguous.message
    none = detect_labels([200])
    assert none.names is None and "fit no built-in table" in none.message
    # A NIfTI without an embedded table falls back to the ids.
    import nibabel as nib

    arr = np.zeros((4, 4, 4), dtype=np.uint8)
    arr[0, 0, 0], arr[1, 1, 1] = 1, 130
    path = tmp_path / "lab.nii.gz"
    nib.save(nib.Nifti1Image(arr, np.eye(4)), path)
    assert detect_labels(np.unique(arr), path=path).table == "vista3d"


def test_label_maps_are_told_apart_from_images() -> None:
    import nibabel as nib

    from medm3.imaging.label_tables import looks_like_label_map

    assert looks_like_label_map(np.asarray(nib.load(sample_ct_labels()).dataobj))
    assert not looks_like_label_map(np.asarray(nib.load(sample_ct()).dataobj))  # HU < 0
    binary = np.zeros((8, 8, 8), np.float32)
    binary[2:4, 2:4, 2:4] = 1.0
    assert looks_like_label_map(binary)
    rng = np.random.default_rng(0)
    mr = rng.integers(0, 900, (16, 16, 16)).astype(np.int16)  # MR-like: many intensities
    mr[:4] = 0
    assert not looks_like_label_map(mr)
    assert not looks_like_label_map(binary + 0.5)  # not integers
    assert not looks_like_label_map(np.ones((4, 4), np.uint8))  # no background 0


def test_label_names_for_a_mask_file() -> None:
    from medm3.imaging.io import load_image
    from medm3.imaging.label_tables import label_names_for

    mask = load_image(sample_ct_labels())
    names, note = label_names_for(mask, modality="CT")
    assert names[5] == "liver" and "header" in note
    names, note = label_names_for(mask, "vista3d")
    assert names == get_table("vista3d")
    assert note == "label names from vista3d"
