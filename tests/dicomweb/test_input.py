"""Reading studies from a real Orthanc: references, retrieval, cache, series choice.

Reference values come from reading the very files that were uploaded with the
local readers (and the NIfTI the CT series was written from), never from the
code under test.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medm3.dicomweb.fetch import cache_dir
from medm3.errors import InputError
from medm3.imaging.io import load_image
from tests.dicomweb.conftest import Orthanc, need, pydicom_series


def test_ct_series_equals_the_local_files_and_the_nifti(pacs: Orthanc) -> None:
    ct = need(pacs, "ct")
    image = load_image(pacs.ref(ct["study"]))  # the study has one image series (+ SR, PR)
    local = load_image(ct["folder"])
    np.testing.assert_array_equal(image.array, local.array)
    np.testing.assert_allclose(image.affine, local.affine, atol=1e-6)
    nii = nib.as_closest_canonical(nib.load(str(ct["nifti"])))
    np.testing.assert_array_equal(image.array, np.asarray(nii.dataobj))
    np.testing.assert_allclose(image.affine, nii.affine, atol=1e-4)
    assert image.modality == "CT"
    assert image.metadata["dicomweb"]["series_uid"] == ct["series"]
    assert image.metadata["container"] == "files"  # so a DICOM-SEG can be written
    cached = sorted((cache_dir() / ct["series"]).iterdir())
    assert len(cached) == 30 and all(p.suffix == ".dcm" for p in cached)
    assert not [p for p in cache_dir().iterdir() if p.name.startswith(".partial")]


def test_cache_is_reused_without_downloading(
    pacs: Orthanc, monkeypatch: pytest.MonkeyPatch
) -> None:
    study, series, heads = pydicom_series(pacs, "CT5N")
    first = load_image(pacs.ref(study, series))
    local = load_image([Path(str(h.filename)) for h in heads])
    np.testing.assert_array_equal(first.array, local.array)
    np.testing.assert_allclose(first.affine, local.affine, atol=1e-6)
    files = {p.stem for p in (cache_dir() / series).iterdir()}
    assert files == {str(h.SOPInstanceUID) for h in heads}

    from dicomweb_client.api import DICOMwebClient

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("retrieved an instance that is in the cache")

    monkeypatch.setattr(DICOMwebClient, "retrieve_instance", refuse)
    again = load_image(pacs.ref(study, series))
    np.testing.assert_array_equal(again.array, first.array)


def test_path_mangled_reference_and_2d_cxr(pacs: Orthanc) -> None:
    cxr = need(pacs, "cxr")
    # CLI commands pass images through pathlib, which collapses "//".
    image = load_image(Path(pacs.ref(cxr["study"])))
    local = load_image(cxr["path"])
    assert not image.is_volume
    np.testing.assert_array_equal(image.array, local.array)
    assert image.metadata.get("photometric") == local.metadata.get("photometric")


def test_several_series_need_a_choice(pacs: Orthanc) -> None:
    study, _, _ = pydicom_series(pacs, "CT5N")  # study 98892001 holds CT2N and CT5N
    with pytest.raises(InputError) as info:
        load_image(pacs.ref(study))
    text = str(info.value)
    assert "holds 2 DICOM series" in text and "--series" in text and "[1]" in text
    _, ct5n, heads = pydicom_series(pacs, "CT5N")
    chosen = load_image(pacs.ref(study), series=ct5n)
    assert chosen.spatial_shape[2] == len(heads)
    by_index = load_image(pacs.ref(study), series="1")
    assert by_index.metadata["series_uid"] in {ct5n, pydicom_series(pacs, "CT2N")[1]}
    assert not [p for p in cache_dir().iterdir() if p.name.startswith(".partial")]


def test_series_logic_gap_error_names_the_reference(pacs: Orthanc) -> None:
    study, series, _ = pydicom_series(pacs, "CT2")  # 4 slices with a 200 mm gap
    ref = pacs.ref(study, series)
    with pytest.raises(InputError) as info:
        load_image(ref)
    assert str(info.value).startswith(ref + ": missing slice(s)")
