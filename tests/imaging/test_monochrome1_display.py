"""MONOCHROME1 radiographs are displayed bright-bones.

The shared ``cxr_monochrome1.dcm`` carries a MONOCHROME1 tag over pixel data
that already looks MONOCHROME2 (lungs stored low), so following the standard
renders it as a negative; its own test checks the inversion rule. Here a true
MONOCHROME1 file is built from the real NIH radiograph (stored values
inverted, as a CR plate writes them) and must load and render exactly like
the original: bones bright, lungs dark.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from medm3.imaging import load_image
from medm3.imaging.render import render_slice


def _write_mono1(png: Path, out: Path) -> np.ndarray:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    pixels = np.asarray(Image.open(png).convert("L"), dtype=np.uint16) * 16  # 12-bit values
    stored = (4095 - pixels).astype(np.uint16)  # MONOCHROME1: high stored value = dark
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME1"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelSpacing = [0.2, 0.2]
    ds.PixelData = stored.tobytes()
    ds.save_as(out, enforce_file_format=True)
    return pixels


def test_true_monochrome1_loads_and_renders_bright_bones(cxr_png_path: Path, tmp_path: Path):
    dcm = tmp_path / "mono1.dcm"
    original = _write_mono1(cxr_png_path, dcm)
    image = load_image(dcm)
    assert image.modality == "XR" and image.metadata["photometric"] == "MONOCHROME1"
    # Loaded values are the display-oriented ones: identical up to the constant range offset.
    diff = image.array.astype(np.int32) - original.astype(np.int32)
    assert np.ptp(diff) == 0

    rendered = np.asarray(render_slice(image, legend=False).convert("L"), dtype=np.float32)
    reference = np.asarray(
        Image.open(cxr_png_path).convert("L").resize(rendered.shape[::-1]), dtype=np.float32
    )
    # Same picture as the MONOCHROME2 original, not its negative.
    assert np.corrcoef(rendered.ravel(), reference.ravel())[0, 1] > 0.95
