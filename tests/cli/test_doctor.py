"""`m3 doctor`: versions, devices, weights (medm3 and torchxrayvision caches), tools, folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medm3.experts.catalogue import XRV_FILENAMES
from tests.cli.helpers import run


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MEDM3_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv("MEDM3_DATA_DIR", raising=False)
    monkeypatch.setenv("MEDM3_DICOMWEB_URL", "http://pacs.example/dicom-web")
    monkeypatch.setenv("MEDM3_DICOMWEB_TOKEN", "s3cret")
    monkeypatch.setenv("MEDM3_DICOMWEB_CONFIG", str(tmp_path / "dicomweb.json"))
    return tmp_path


def _by_name(checks: list[dict]) -> dict[str, dict]:
    return {c["name"]: c for c in checks}


def test_doctor_reports_what_is_where(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import numpy
    import torch

    vista = env / "cache" / "bundles" / "vista3d" / "models"
    vista.mkdir(parents=True)
    (vista / "model.pt").write_bytes(b"w")
    xrv_home = env / "home" / ".torchxrayvision" / "models_data"
    xrv_home.mkdir(parents=True)
    for name in XRV_FILENAMES.values():
        (xrv_home / name).write_bytes(b"w")

    code, out, err = run(["doctor", "--json"], capsys)
    assert code == 0, err
    checks = _by_name(json.loads(out))
    assert checks["numpy"]["detail"].startswith(numpy.__version__)
    assert checks["torch"]["detail"].startswith(torch.__version__.split("+")[0])
    assert (checks["cuda"]["status"] == "ok") == torch.cuda.is_available()
    assert checks["vista3d"]["status"] == "ok"
    assert checks["cxr"]["status"] == "ok" and str(xrv_home) in checks["cxr"]["detail"]
    assert checks["brats"]["status"] == "missing"
    assert "m3 experts download brats" in checks["brats"]["detail"]
    assert checks["cache"]["status"] == "ok"
    assert checks["data dir"]["detail"].startswith(str(env / "data" / "medm3"))
    assert not (env / "data").exists()  # checked, not created
    dicomweb = checks["DICOMweb"]["detail"]
    assert "http://pacs.example/dicom-web" in dicomweb and "s3cret" not in dicomweb
    assert f"no config file at {env / 'dicomweb.json'}" in dicomweb


def test_doctor_reports_the_data_dir_chat_and_serve_use(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from medm3.cli.chat import default_output_dir

    monkeypatch.setenv("MEDM3_DATA_DIR", str(env / "mine"))
    code, out, err = run(["doctor", "--json"], capsys)
    assert code == 0, err
    assert _by_name(json.loads(out))["data dir"]["detail"].startswith(str(env / "mine"))
    assert default_output_dir().parent == env / "mine" / "chat"


def test_doctor_flags_a_dicomweb_config_others_can_read(env: Path, capsys) -> None:
    config = env / "dicomweb.json"
    config.write_text('{"servers": {}}')
    config.chmod(0o644)
    _, out, _ = run(["doctor", "--json"], capsys)
    detail = _by_name(json.loads(out))["DICOMweb"]["detail"]
    assert f"config file {config} (mode 644) (readable by others" in detail


def test_doctor_verbose_lists_files_and_urls(env: Path, capsys) -> None:
    code, out, _ = run(["doctor", "--verbose"], capsys)
    assert code == 0
    assert "searched: " + str(env / "home" / ".torchxrayvision" / "models_data") in out
    assert "https://github.com/mlmed/torchxrayvision/releases/download/" in out
    assert "by hand: python -m monai.bundle download --name brats_mri_segmentation" in out
    code, out, _ = run(["doctor"], capsys)
    assert "releases/download" not in out  # details only with --verbose


def test_doctor_fails_when_the_cache_is_unusable(env: Path, capsys, monkeypatch) -> None:
    blocker = env / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MEDM3_CACHE", str(blocker / "cache"))
    code, out, _ = run(["doctor"], capsys)
    assert code == 1
    assert "not writable" in out
