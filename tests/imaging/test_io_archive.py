"""Zipped DICOM series: in-memory reading and the archive safety checks."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from medm3.errors import InputError
from medm3.imaging import load_image
from medm3.imaging.archive import is_unsafe_name
from medm3.imaging.limits import ReadLimits


def zip_series(info, dest: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in info.files:
            zf.write(f, f"export/{f.name}")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return dest


def test_zip_of_series_reads_in_memory(make_series, tmp_path: Path) -> None:
    info = make_series(codes="LIP")
    archive = zip_series(info, tmp_path / "series.zip", {"export/README.txt": b"hi"})
    before = set(tmp_path.rglob("*"))
    image = load_image(archive)
    np.testing.assert_array_equal(image.array, info.volume)
    np.testing.assert_allclose(image.affine, info.affine, atol=1e-4)
    assert image.metadata["container"] == "zip"
    assert image.metadata["skipped_files"] == 1
    assert set(tmp_path.rglob("*")) == before  # nothing extracted


def test_zip_with_path_traversal_is_refused(make_series, tmp_path: Path) -> None:
    info = make_series()
    archive = zip_series(info, tmp_path / "evil.zip", {"../evil.dcm": b"x" * 10})
    with pytest.raises(InputError, match=r"'\.\./evil\.dcm' has an unsafe path") as err:
        load_image(archive)
    assert str(archive) in str(err.value)


@pytest.mark.parametrize(
    ("name", "unsafe"),
    [
        ("a/b.dcm", False),
        ("a/../b.dcm", True),
        ("../b", True),
        ("/etc/passwd", True),
        ("C:\\x.dcm", True),
        ("a\\..\\b", True),
        ("..b/c", False),
    ],
)
def test_is_unsafe_name(name: str, unsafe: bool) -> None:
    assert is_unsafe_name(name) is unsafe


def test_too_many_members(make_series, tmp_path: Path) -> None:
    info = make_series()
    archive = zip_series(info, tmp_path / "many.zip")
    with pytest.raises(InputError, match="more than 3 members"):
        load_image(archive, limits=ReadLimits(max_members=3))


def test_too_many_members_from_environment(make_series, tmp_path: Path, monkeypatch) -> None:
    info = make_series()
    archive = zip_series(info, tmp_path / "many.zip")
    monkeypatch.setenv("MEDM3_MAX_ZIP_MEMBERS", "2")
    with pytest.raises(InputError, match="MEDM3_MAX_ZIP_MEMBERS"):
        load_image(archive)


def test_member_and_total_size_limits(make_series, tmp_path: Path) -> None:
    info = make_series()
    archive = zip_series(info, tmp_path / "s.zip")
    with pytest.raises(InputError, match=r"declares .* bytes uncompressed"):
        load_image(archive, limits=ReadLimits(max_member_bytes=100))
    with pytest.raises(InputError, match="in total"):
        load_image(archive, limits=ReadLimits(max_total_bytes=1000))


def test_zip_bomb_ratio_is_refused_before_decompression(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("slice.dcm", b"\0" * (4 << 20))
    with pytest.raises(InputError, match="suspicious compression ratio"):
        load_image(archive)


def test_zip_without_dicom(tmp_path: Path) -> None:
    archive = tmp_path / "notes.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("notes.txt", b"hello")
    with pytest.raises(InputError, match=r"no DICOM image files in this archive.*notes\.txt"):
        load_image(archive)


def test_corrupt_zip(tmp_path: Path) -> None:
    archive = tmp_path / "broken.zip"
    archive.write_bytes(b"PK\x03\x04" + b"\x00" * 50)
    with pytest.raises(InputError, match="not a valid zip archive"):
        load_image(archive)
