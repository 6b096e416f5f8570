"""Small public sample images shipped with medm3 (origin and licence in ``README.md`` here).

- :func:`sample_ct`: an abdominal CT slab (122 x 101 x 30, 3 mm, HU) from the
  TotalSegmentator test suite (Apache-2.0).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["SAMPLE_CT", "sample_ct"]

SAMPLE_CT = "ct_totalseg_example_slab.nii.gz"


def _path(name: str) -> Path:
    path = Path(str(resources.files(__name__).joinpath(name)))
    if not path.is_file():  # pragma: no cover - a broken installation
        from medm3.errors import MedM3Error

        raise MedM3Error(f"sample file missing from the installation: {path}")
    return path


def sample_ct() -> Path:
    """Path of the bundled sample abdominal CT (NIfTI)."""
    return _path(SAMPLE_CT)
