"""Fixtures that build synthetic DICOM series (and multi-frame files) with pydicom.

A series is written from a known RAS volume ``V`` with affine ``A``: the volume
is permuted/flipped into the requested voxel axis codes (e.g. ``"LPS"`` for a
standard axial stack, ``"PIL"`` for a sagittal one), converted to LPS, and
each slice becomes one file with matching ImageOrientationPatient and
ImagePositionPatient. Reading the series back must therefore give ``V`` and
``A`` again (for RAS-aligned ``A``), whatever the orientation or file order.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"


@dataclass
class SeriesInfo:
    """What a builder wrote and what reading it back must give."""

    folder: Path
    files: list[Path]
    volume: np.ndarray  # expected RAS+ array (HU)
    affine: np.ndarray  # expected RAS+ affine
    uid: str
    description: str


def synthetic_volume(shape: tuple[int, int, int] = (6, 5, 4), seed: int = 0) -> np.ndarray:
    """A small int16 HU volume with air, soft tissue and bone values, all voxels distinct-ish."""
    rng = np.random.default_rng(seed)
    vol = rng.integers(-200, 1500, size=shape).astype(np.int16)
    vol[0] = -1000  # an air plane
    return vol


def slices_in_orientation(
    volume: np.ndarray, affine: np.ndarray, codes: str
) -> tuple[np.ndarray, np.ndarray]:
    """Permute/flip a RAS volume so its voxel axes have ``codes``; return (data, LPS affine)."""
    start = nib.orientations.io_orientation(affine)
    target = nib.orientations.axcodes2ornt(tuple(codes))
    transform = nib.orientations.ornt_transform(start, target)
    data = nib.orientations.apply_orientation(volume, transform)
    new_affine = affine @ nib.orientations.inv_ornt_aff(transform, volume.shape)
    return np.ascontiguousarray(data), LPS @ new_affine


def base_dataset(
    *,
    modality: str = "CT",
    series_uid: str,
    description: str,
    series_number: int = 1,
    study_uid: str | None = None,
    sop_class: str = CTImageStorage,
) -> Dataset:
    """A DICOM dataset with file meta and patient/study/series attributes, no pixels."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or "1.2.826.0.1.3680043.8.498.1"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.Modality = modality
    ds.PatientName = "Synthetic^Phantom"
    ds.PatientID = "SYN0001"
    return ds


def set_pixels(ds: Dataset, stored: np.ndarray, slope: float, intercept: float) -> None:
    """Attach uint16 MONOCHROME2 pixel data and rescale tags."""
    ds.Rows, ds.Columns = int(stored.shape[-2]), int(stored.shape[-1])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope = f"{slope:g}"
    ds.RescaleIntercept = f"{intercept:g}"
    ds.PixelData = np.ascontiguousarray(stored.astype("<u2")).tobytes()


def _stored(hu: np.ndarray, slope: float, intercept: float) -> np.ndarray:
    stored = np.round((hu.astype(np.float64) - intercept) / slope)
    assert stored.min() >= 0 and stored.max() < 65536
    return stored.astype(np.uint16)


def write_series(
    folder: Path,
    volume: np.ndarray,
    affine: np.ndarray,
    codes: str = "LPS",
    *,
    modality: str = "CT",
    slope: float = 1.0,
    intercept: float = -1024.0,
    series_uid: str | None = None,
    description: str = "synthetic axial",
    series_number: int = 1,
    seed: int = 0,
) -> SeriesInfo:
    """Write ``volume`` (RAS, HU) as one file per slice, with shuffled file names.

    File names are random and InstanceNumber runs backwards, so a reader that
    sorts by either gets the order wrong.
    """
    folder.mkdir(parents=True, exist_ok=True)
    data, lps = slices_in_orientation(volume, affine, codes)
    col_sp = float(np.linalg.norm(lps[:3, 0]))
    row_sp = float(np.linalg.norm(lps[:3, 1]))
    iop = [*(lps[:3, 0] / col_sp), *(lps[:3, 1] / row_sp)]
    uid = series_uid or generate_uid()
    n = data.shape[2]
    names = [f"IM{k:04d}.dcm" for k in random.Random(seed).sample(range(1000, 9999), n)]
    names.sort(reverse=True)  # file-name order runs against slice order
    files = []
    for k in range(n):
        ds = base_dataset(
            modality=modality, series_uid=uid, description=description, series_number=series_number
        )
        ds.InstanceNumber = n - k
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in iop]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in (lps @ [0, 0, k, 1])[:3]]
        ds.PixelSpacing = [f"{row_sp:g}", f"{col_sp:g}"]
        ds.SliceThickness = f"{float(np.linalg.norm(lps[:3, 2])):g}"
        set_pixels(ds, _stored(data[:, :, k].T, slope, intercept), slope, intercept)
        path = folder / names[k]
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    canon = nib.as_closest_canonical(nib.Nifti1Image(volume, affine))
    return SeriesInfo(
        folder=folder,
        files=files,
        volume=np.asarray(canon.dataobj),
        affine=canon.affine,
        uid=uid,
        description=description,
    )


def write_enhanced(
    path: Path, volume: np.ndarray, affine: np.ndarray, codes: str = "LPS", shuffle: bool = True
) -> Path:
    """Write ``volume`` as one Enhanced CT multi-frame file with per-frame positions."""
    data, lps = slices_in_orientation(volume, affine, codes)
    col_sp = float(np.linalg.norm(lps[:3, 0]))
    row_sp = float(np.linalg.norm(lps[:3, 1]))
    iop = [*(lps[:3, 0] / col_sp), *(lps[:3, 1] / row_sp)]
    n = data.shape[2]
    order = list(range(n))
    if shuffle:
        random.Random(1).shuffle(order)
    ds = base_dataset(series_uid=generate_uid(), description="enhanced", sop_class=ENHANCED_CT)
    ds.NumberOfFrames = n
    shared = Dataset()
    orient = Dataset()
    orient.ImageOrientationPatient = [f"{v:.8f}" for v in iop]
    measures = Dataset()
    measures.PixelSpacing = [f"{row_sp:g}", f"{col_sp:g}"]
    measures.SliceThickness = f"{float(np.linalg.norm(lps[:3, 2])):g}"
    transform = Dataset()
    transform.RescaleSlope = "1"
    transform.RescaleIntercept = "-1024"
    transform.RescaleType = "HU"
    shared.PlaneOrientationSequence = Sequence([orient])
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for k in order:
        item = Dataset()
        pos = Dataset()
        pos.ImagePositionPatient = [f"{v:.6f}" for v in (lps @ [0, 0, k, 1])[:3]]
        item.PlanePositionSequence = Sequence([pos])
        frames.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    stored = np.stack([_stored(data[:, :, k].T, 1.0, -1024.0) for k in order])
    set_pixels(ds, stored, 1.0, -1024.0)
    del ds.RescaleSlope, ds.RescaleIntercept  # enhanced: only in functional groups
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def ras_volume() -> tuple[np.ndarray, np.ndarray]:
    """A small RAS-aligned HU volume and its affine (anisotropic spacing, offset origin)."""
    affine = np.array(
        [[0.8, 0, 0, -20.0], [0, 0.9, 0, 10.0], [0, 0, 2.5, 30.0], [0, 0, 0, 1]], dtype=float
    )
    return synthetic_volume(), affine


@pytest.fixture
def make_series(
    tmp_path: Path, ras_volume: tuple[np.ndarray, np.ndarray]
) -> Callable[..., SeriesInfo]:
    """Factory: ``make_series(name, codes="LPS", **kwargs)`` writes a series under tmp_path."""

    def make(name: str = "series", codes: str = "LPS", **kwargs: Any) -> SeriesInfo:
        volume = kwargs.pop("volume", ras_volume[0])
        affine = kwargs.pop("affine", ras_volume[1])
        return write_series(tmp_path / name, volume, affine, codes, **kwargs)

    return make


@dataclass(frozen=True)
class Builders:
    """The builder functions of this module, handed to tests through a fixture."""

    write_series: Callable[..., SeriesInfo] = write_series
    write_enhanced: Callable[..., Path] = write_enhanced
    base_dataset: Callable[..., Dataset] = base_dataset
    set_pixels: Callable[..., None] = set_pixels


@pytest.fixture
def dicom_builders() -> Builders:
    """Access to ``write_series``, ``write_enhanced``, ``base_dataset``, ``set_pixels``."""
    return Builders()
