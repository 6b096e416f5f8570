"""Registry of image readers, one small module per format.

Each module exposes ``READER``, a :class:`~medm3.imaging.readers.base.Reader`
with its suffixes, a magic-byte check and a read function.
:func:`medm3.imaging.io.load_image` picks readers from this registry; folders
(and lists of files) go straight to the DICOM series reader.
"""

from __future__ import annotations

from medm3.imaging.readers import dicom_file, dicom_series, itk, nifti, raster
from medm3.imaging.readers.base import Head, ReadContext, Reader

#: Readers in magic-check order (DICOM first: its preamble may hold a TIFF header).
READERS: tuple[Reader, ...] = (
    dicom_file.READER,
    nifti.READER,
    itk.READER,
    dicom_series.READER,
    raster.READER,
)

__all__ = ["READERS", "Head", "ReadContext", "Reader"]
