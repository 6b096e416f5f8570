"""The bundled sample CT: present, intact (checksums in its README), licensed, loadable, public."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from medm3.sample_data import sample_ct


def _recorded_sha256(readme: str) -> str:
    match = re.search(r"Result sha256 `([0-9a-f]{64})`", readme)
    assert match, "the README records the sample's sha256"
    return match.group(1)


def test_file_matches_the_recorded_provenance() -> None:
    folder = sample_ct().parent
    readme = (folder / "README.md").read_text()
    digest = hashlib.sha256(sample_ct().read_bytes()).hexdigest()
    assert digest == _recorded_sha256(readme)
    assert sample_ct().stat().st_size < 1_000_000
    licence = (folder / "LICENSE-TotalSegmentator.txt").read_text()
    assert "Apache License" in licence and "Version 2.0" in licence
    assert "totalsegmentator-2.18.0.tar.gz" in readme


def test_sample_is_not_a_copy_of_the_shared_test_data(shared_data: Path) -> None:
    """The package ships public data of its own, never a file of ../shared/data."""
    root = shared_data
    ours = hashlib.sha256(sample_ct().read_bytes()).hexdigest()
    shared = {hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}
    assert ours not in shared


def test_sample_ct_loads_as_ct_in_hu() -> None:
    from medm3.imaging.io import load_image

    image = load_image(sample_ct())
    assert image.array.shape == (122, 101, 30)
    assert image.spacing == (3.0, 3.0, 3.0)
    assert image.modality == "CT"
    assert image.array.min() >= -1100 and image.array.max() > 500
