"""Modality inference, aliases, DICOM tag mapping and ReadLimits."""

from __future__ import annotations

import numpy as np
import pytest

from medm3.errors import InputError
from medm3.imaging.limits import ReadLimits
from medm3.imaging.modality import dicom_modality, infer_modality, normalize_modality


def test_ct_like_volume_is_ct() -> None:
    rng = np.random.default_rng(0)
    vol = rng.normal(40, 30, size=(40, 40, 20))
    vol[:5] = -1000  # air around the patient
    vol[20:22, 20:22] = 900  # bone
    assert infer_modality(vol.astype(np.int16), is_volume=True) == "CT"


def test_mr_like_volumes_are_mr() -> None:
    rng = np.random.default_rng(1)
    assert infer_modality(rng.uniform(0, 3000, (30, 30, 10)), is_volume=True) == "MR"
    no_bone = np.full((20, 20, 5), -1000.0)
    no_bone[5:15] = 40  # air and soft tissue only, nothing above 300
    assert infer_modality(no_bone, is_volume=True) == "MR"
    assert infer_modality(np.full((4, 4, 4), np.nan), is_volume=True) == "MR"


def test_2d_rules() -> None:
    gray = np.tile(np.arange(256, dtype=np.uint8), (64, 1))
    assert infer_modality(gray, is_volume=False) == "XR"
    near_gray = np.dstack([gray, gray, np.clip(gray.astype(int) + 2, 0, 255)]).astype(np.uint8)
    assert infer_modality(near_gray, is_volume=False) == "XR"
    colour = np.zeros((64, 64, 3), dtype=np.uint8)
    colour[..., 0] = 220
    colour[..., 2] = np.arange(64)[None, :]
    assert infer_modality(colour, is_volume=False) == "OT"


@pytest.mark.parametrize(
    ("alias", "code"),
    [
        ("ct", "CT"),
        ("MRI", "MR"),
        ("mr", "MR"),
        ("CXR", "XR"),
        ("X-ray", "XR"),
        ("x_ray", "XR"),
        ("PET", "PT"),
        ("ultrasound", "US"),
        ("ot", "OT"),
    ],
)
def test_aliases(alias: str, code: str) -> None:
    assert normalize_modality(alias) == code


def test_unknown_alias() -> None:
    with pytest.raises(InputError, match=r"unknown modality 'SPECT'.*CT, MR, XR, PT, US, OT"):
        normalize_modality("SPECT")


@pytest.mark.parametrize(
    ("tag", "code"),
    [
        ("CR", "XR"),
        ("DX", "XR"),
        ("MG", "XR"),
        ("XA", "XR"),
        ("IO", "XR"),
        ("CT", "CT"),
        ("MR", "MR"),
        ("PT", "PT"),
        ("US", "US"),
        ("NM", "OT"),
        ("SEG", "OT"),
        ("", None),
        (None, None),
    ],
)
def test_dicom_modality_map(tag: str | None, code: str | None) -> None:
    assert dicom_modality(tag) == code


def test_limits_from_env_and_overrides() -> None:
    env = {"MEDM3_MAX_PIXELS": "1_000", "MEDM3_MAX_ZIP_RATIO": "50.5"}
    limits = ReadLimits.from_env(env, max_members=7)
    assert (limits.max_pixels, limits.max_ratio, limits.max_members) == (1000, 50.5, 7)
    assert ReadLimits.from_env({}) == ReadLimits()
    with pytest.raises(InputError, match="MEDM3_MAX_FILES"):
        ReadLimits.from_env({"MEDM3_MAX_FILES": "-3"})
    with pytest.raises(ValueError, match="max_pixels"):
        ReadLimits(max_pixels=0)
