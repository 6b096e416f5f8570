"""Shared pytest fixtures.

Real sample data lives outside the repository (never commit it). Tests find it
through ``MEDM3_TEST_DATA`` (default: ``../shared/data`` beside the checkout)
and skip with a clear reason when it is absent.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"

# Tests never download anything.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep every test's weights/result cache out of the user's ~/.cache/medm3."""
    if "MEDM3_CACHE" not in os.environ:
        os.environ["MEDM3_CACHE"] = str(tmp_path_factory.mktemp("medm3-cache"))


def _data_dir() -> Path:
    return Path(os.environ.get("MEDM3_TEST_DATA", DEFAULT_DATA))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of real sample data (CT + labels, CXR PNG and DICOM, brain MRI)."""
    path = _data_dir()
    if not path.is_dir():
        pytest.skip(f"real sample data not found at {path} (set MEDM3_TEST_DATA)")
    return path


def shared_file(relative: str) -> Path:
    """Path of one sample file, skipping the test when it is missing."""
    path = _data_dir() / relative
    if not path.exists():
        pytest.skip(f"sample file {path} not found (set MEDM3_TEST_DATA)")
    return path


def shared_ct() -> Path:
    """Real abdominal CT (122x101x30, 3 mm, HU int16; TotalSegmentator's test CT)."""
    return shared_file("ct/ct_abdomen_3mm.nii.gz")


def shared_ct_labels() -> Path:
    """TotalSegmentator's own v2 label map of :func:`shared_ct` (liver = 5, names embedded)."""
    return shared_file("ct/ct_abdomen_3mm_totalseg.nii.gz")


@pytest.fixture
def ct_path() -> Path:
    """Real abdominal CT (122x101x30, 3 mm, HU int16)."""
    return shared_ct()


@pytest.fixture
def ct_labels_path() -> Path:
    """TotalSegmentator v2 labels of :func:`ct_path` (liver = 5)."""
    return shared_ct_labels()


@pytest.fixture
def ct_label_names_path() -> Path:
    """JSON map label id -> name for :func:`ct_labels_path`."""
    return shared_file("ct/totalseg_v2_labels.json")


@pytest.fixture
def cxr_png_path() -> Path:
    """NIH ChestX-ray14 frontal CXR PNG (8-bit; 512x512 in the shared copy)."""
    return shared_file("cxr/nih_00000001_000.png")


@pytest.fixture
def cxr_mono1_path() -> Path:
    """Chest X-ray DICOM with MONOCHROME1 photometric interpretation."""
    return shared_file("cxr/cxr_monochrome1.dcm")


@pytest.fixture
def mr_path() -> Path:
    """Small T1 brain MRI (NIfTI)."""
    return shared_file("mr/brain_t1_anatomical.nii")


@pytest.fixture
def fake_experts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Register the FAKESEG test double; isolate shared expert instances and the result cache."""
    from medm3.experts import cache as cache_module
    from medm3.experts import registry
    from tests.doubles import FakeSegExpert

    monkeypatch.delenv("MEDM3_NO_RESULT_CACHE", raising=False)
    store = cache_module.ResultCache(tmp_path / "results")
    monkeypatch.setattr(cache_module, "default_cache", lambda: store)
    monkeypatch.setattr(registry, "_instances", {})
    registry.EXPERTS.register(FakeSegExpert.name, FakeSegExpert, overwrite=True)
    yield
    registry.EXPERTS._loaded.pop(FakeSegExpert.name, None)
    registry.EXPERTS._targets.pop(FakeSegExpert.name, None)
