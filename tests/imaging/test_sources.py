"""Remote references in ``load_image`` go to the image source registered for their prefix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medm3.errors import InputError
from medm3.imaging import load_image
from medm3.imaging.image import MedicalImage
from medm3.imaging.sources import SOURCES, ImageSource, reference_source


def test_dicomweb_is_the_built_in_source() -> None:
    source = reference_source("dicomweb+https://pacs.example.org/dicom-web/studies/1.2.3")
    from medm3.dicomweb.fetch import SOURCE

    assert source is SOURCE and source.name == "dicomweb"
    assert reference_source(Path("dicomweb+https://pacs/dicom-web/studies/1.2")) is SOURCE


@pytest.mark.parametrize(
    "value", ["scan.nii.gz", "nope+https://host/x", "dicomweb+ftp://host/x", 42, ["a", "b"]]
)
def test_other_values_are_not_references(value) -> None:
    assert reference_source(value) is None


def test_a_registered_source_reads_its_references(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []

    def load(reference: str, ctx) -> MedicalImage:
        seen.append((reference, ctx.series, ctx.gaps))
        return MedicalImage(
            np.zeros((4, 5), np.uint8), (1.0, 1.0), np.eye(4), "OT", "caller", reference
        )

    monkeypatch.setattr(SOURCES, "_loaded", dict(SOURCES._loaded))
    SOURCES.register("toy", ImageSource("toy", load))
    image = load_image("toy+https://example.org/img/7", series="2", allow_gaps="fill")
    assert image.array.shape == (4, 5)
    assert seen == [("toy+https://example.org/img/7", "2", "fill")]


def test_an_unknown_prefix_is_read_as_a_path() -> None:
    with pytest.raises(InputError, match="no such file or folder"):
        load_image("toy2+https://example.org/img")


def test_reading_local_files_does_not_import_dicomweb(ct_path: Path) -> None:
    code = (
        "import sys; from medm3.imaging import load_image; "
        f"load_image({str(ct_path)!r}); "
        "print(sorted(m for m in sys.modules if m.startswith('medm3.dicomweb')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
