"""What must never leave the machine: PHI values of the DICOM inputs of a conversation.

Backends that send data elsewhere (the OpenAI-compatible one) receive these
values and scrub them from every outgoing text. Images are sent as rendered
pixels only (no DICOM header travels), so the header values can only leak
through text: the user's question, file names, or model output echoed back.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from medm3.imaging.image import MedicalImage


def _datasets(source: str, container: str | None) -> Iterable[object]:
    import pydicom

    from medm3.imaging.archive import open_zip
    from medm3.imaging.deid import is_dicom_file
    from medm3.imaging.limits import ReadLimits

    path = Path(source)
    if path.is_file() and path.suffix.lower() == ".zip":
        with open_zip(path, ReadLimits.from_env()) as members:
            for m in members:
                data = m.read()
                if data[128:132] == b"DICM":
                    import io

                    yield pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
        return
    if path.is_dir():
        for root, _, names in os.walk(path):
            for name in sorted(names):
                p = Path(root) / name
                if is_dicom_file(p):
                    yield pydicom.dcmread(p, stop_before_pixels=True, force=True)
        return
    if path.is_file():
        yield pydicom.dcmread(path, stop_before_pixels=True, force=True)


def sensitive_values(images: Iterable[MedicalImage]) -> set[str]:
    """The identifying header values of every DICOM input (empty for other formats).

    Args:
        images: The conversation's input images.

    Returns:
        Strings (names, IDs, dates, UIDs, institutions ...) to scrub from
        anything sent off the machine.
    """
    from medm3.imaging.deid import phi_values

    values: set[str] = set()
    for image in images:
        if not str(image.metadata.get("format", "")).startswith("dicom"):
            continue
        for source in str(image.source).split(os.pathsep):
            for ds in _datasets(source, image.metadata.get("container")):
                values |= phi_values(ds)
    return values
