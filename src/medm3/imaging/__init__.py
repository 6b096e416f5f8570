"""Medical image I/O, windowing, slicing, overlays and DICOM de-identification.

Public entry points: :func:`load_image` and :class:`MedicalImage`.
"""

from __future__ import annotations

from medm3.imaging.image import MODALITIES, MedicalImage
from medm3.imaging.io import load_image, save_nifti

__all__ = ["MODALITIES", "MedicalImage", "load_image", "save_nifti"]
