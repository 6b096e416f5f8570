"""Modality codes: DICOM tag mapping, caller aliases and inference from the data.

Precedence (applied by :func:`medm3.imaging.io.load_image`): a modality given
by the caller wins (``modality_source="caller"``); else the DICOM Modality tag
(``"dicom"``); else the modality is inferred from the pixel values
(``"inferred"``), which is always the case for NIfTI, NRRD and PNG/JPG.

Inference rules (:func:`infer_modality`), on a subsample of the data:

* **Volume, label map** (``SEG``): non-negative integers with a background of
  0 and at most 16 ids, or ids that fit a built-in label table
  (:func:`medm3.imaging.label_tables.looks_like_label_map`).
* **Volume, CT**: at least 0.5 % of the voxels lie in the air band
  -1100..-900 (HU) and the 99.9th percentile exceeds 300 (bone or contrast).
* **Volume, otherwise**: MR (MR has no physical unit and no air plateau).
* **2D grayscale** (or RGB whose channels are practically equal): XR.
* **2D colour** with real saturation (the 95th percentile of per-pixel
  chroma, ``max(R,G,B) - min(R,G,B)``, exceeds 8 % of the value range): OT
  (photographs, pathology).
"""

from __future__ import annotations

import numpy as np

from medm3.errors import InputError
from medm3.imaging.image import MODALITIES

#: DICOM Modality tag value -> medm3 code (anything else -> "OT").
DICOM_MODALITY_MAP: dict[str, str] = {
    **dict.fromkeys(("CR", "DX", "DR", "RG", "MG", "XA", "RF", "PX", "IO"), "XR"),
    "CT": "CT",
    "MR": "MR",
    "PT": "PT",
    "US": "US",
}

#: Accepted spellings for a caller-given modality (upper-cased, '-', '_', ' ' removed).
MODALITY_ALIASES: dict[str, str] = {
    **{m: m for m in MODALITIES},
    "MRI": "MR",
    "CAT": "CT",
    "CTSCAN": "CT",
    "XRAY": "XR",
    "CXR": "XR",
    "DX": "XR",
    "CR": "XR",
    "DR": "XR",
    "RADIOGRAPH": "XR",
    "RADIOGRAPHY": "XR",
    "MG": "XR",
    "MAMMOGRAPHY": "XR",
    "PET": "PT",
    "ULTRASOUND": "US",
    "SONOGRAPHY": "US",
    "OTHER": "OT",
    "PATHOLOGY": "OT",
    "PHOTO": "OT",
}

#: Samples used for inference (the data are strided down to about this many).
_SAMPLE = 2_000_000

AIR_BAND = (-1100.0, -900.0)
MIN_AIR_FRACTION = 0.005
MIN_CT_HIGH = 300.0
MIN_CHROMA = 0.08


def normalize_modality(name: str) -> str:
    """Validate a caller-given modality and return its code.

    Args:
        name: A code from :data:`~medm3.imaging.image.MODALITIES` or an alias
            such as ``"MRI"``, ``"CXR"``, ``"X-ray"``, ``"PET"`` (case-insensitive).

    Returns:
        The modality code, e.g. ``"MR"``.

    Raises:
        InputError: If the name is not recognised.
    """
    key = "".join(ch for ch in str(name).upper() if ch not in "-_ .")
    if key in MODALITY_ALIASES:
        return MODALITY_ALIASES[key]
    raise InputError(
        f"unknown modality '{name}'; use one of {', '.join(MODALITIES)} "
        "(aliases: MRI, CXR, X-ray, PET, ultrasound, ...)"
    )


def dicom_modality(tag: str | None) -> str | None:
    """Map a DICOM Modality tag value to a medm3 code.

    Args:
        tag: The (0008,0060) value, e.g. ``"CR"``; None or empty when absent.

    Returns:
        The code (``"XR"`` for projection radiography, ``"OT"`` for anything
        unknown), or None when the tag is absent.
    """
    if not tag or not str(tag).strip():
        return None
    return DICOM_MODALITY_MAP.get(str(tag).strip().upper(), "OT")


def _subsample(array: np.ndarray, spatial_ndim: int) -> np.ndarray:
    """Stride the spatial axes so roughly ``_SAMPLE`` elements remain."""
    n = int(np.prod(array.shape[:spatial_ndim])) if array.size else 0
    if n <= _SAMPLE:
        return array
    step = int(np.ceil((n / _SAMPLE) ** (1.0 / spatial_ndim)))
    return array[(slice(None, None, step),) * spatial_ndim]


def infer_modality(array: np.ndarray, is_volume: bool) -> str:
    """Guess the modality from pixel values (see the module docstring for the rules).

    Args:
        array: Image data: ``(X, Y, Z[, C])`` for volumes, ``(rows, cols[, C])`` for 2D.
        is_volume: Whether ``array`` is a 3D volume.

    Returns:
        A modality code: ``"SEG"``, ``"CT"`` or ``"MR"`` for volumes, ``"XR"`` or
        ``"OT"`` for 2D.
    """
    if array.size == 0:
        return "MR" if is_volume else "XR"
    if is_volume and array.ndim == 3:
        from medm3.imaging.label_tables import looks_like_label_map

        if looks_like_label_map(_subsample(array, 3)):
            return "SEG"
    if is_volume:
        data = _subsample(array, 3)
        if data.ndim > 3:
            data = data[..., 0]
        values = np.asarray(data, dtype=np.float32).ravel()
        values = values[np.isfinite(values)]
        if values.size == 0:
            return "MR"
        air = np.mean((values >= AIR_BAND[0]) & (values <= AIR_BAND[1]))
        high = float(np.percentile(values, 99.9))
        return "CT" if air >= MIN_AIR_FRACTION and high > MIN_CT_HIGH else "MR"
    if array.ndim == 2 or array.shape[-1] == 1:
        return "XR"
    data = np.asarray(_subsample(array, 2)[..., :3], dtype=np.float32)
    lo, hi = float(np.nanmin(data)), float(np.nanmax(data))
    if hi <= lo:
        return "XR"
    chroma = (np.nanmax(data, axis=-1) - np.nanmin(data, axis=-1)) / (hi - lo)
    return "OT" if float(np.nanpercentile(chroma, 95)) > MIN_CHROMA else "XR"
