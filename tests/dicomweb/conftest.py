"""A real Orthanc PACS with its DICOMweb plug-in, started for the DICOMweb tests.

The server is Debian's ``orthanc`` + ``orthanc-dicomweb`` (installed by
``.ci/run``); the tests skip with the reason when either is missing. The
fixture writes a JSON configuration (HTTP on a free loopback port, DICOM
protocol off, storage in a temporary folder, authentication on with a test
user, remote access off), starts ``Orthanc CONFIG`` as a plain process, waits
for ``/system`` and stops it by PID at the end of the session.

Test data is uploaded with Orthanc's own REST API (``POST /instances``), not
with the code under test: pydicom's bundled CT/MR/CR test series, the shared
chest X-ray DICOM, and the shared abdominal CT written as a DICOM series.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

USER, PASSWORD = "medm3-test", "pacs-secret-42"
PLUGIN_GLOB = "/usr/lib/orthanc/libOrthancDicomWeb.so*"
CT_FOR_UID = "1.2.826.0.1.3680043.8.498.4242"
#: Orthanc drops (silently) any instance with this SeriesDescription (a Lua filter).
REFUSED_DESCRIPTION = "medm3 refused by test"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Orthanc:
    """A running Orthanc: where it listens and how to reach its REST API."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path
    uploaded: dict[str, Any] = field(default_factory=dict)

    @property
    def root(self) -> str:
        """The DICOMweb root (``http://127.0.0.1:PORT/dicom-web``)."""
        return f"{self.url}/dicom-web"

    def ref(self, study: str, series: str | None = None) -> str:
        """A ``dicomweb+http://`` reference to a study (or series)."""
        text = f"dicomweb+{self.root}/studies/{study}"
        return text + (f"/series/{series}" if series else "")

    verify: str | bool = True

    def rest(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call Orthanc's native REST API (the reference side of the tests)."""
        import requests

        kwargs.setdefault("verify", self.verify)
        r = requests.request(method, self.url + path, auth=(USER, PASSWORD), timeout=30, **kwargs)
        r.raise_for_status()
        return r.json() if r.content else None

    def upload(self, path: Path) -> dict[str, Any]:
        """Store one DICOM file through ``POST /instances``."""
        return self.rest("POST", "/instances", data=path.read_bytes())

    def series_of_study(self, study_uid: str) -> list[dict[str, Any]]:
        """Orthanc's series records of a study (MainDicomTags etc.)."""
        query = {"Level": "Series", "Query": {"StudyInstanceUID": study_uid}, "Expand": True}
        found = self.rest("POST", "/tools/find", json=query)
        return list(found)

    def instance_files(self, series_id: str) -> list[bytes]:
        """The stored files of an Orthanc series (by Orthanc id)."""
        import requests

        ids = self.rest("GET", f"/series/{series_id}/instances")
        return [
            requests.get(
                f"{self.url}/instances/{i['ID']}/file", auth=(USER, PASSWORD), timeout=30
            ).content
            for i in ids
        ]


def _orthanc_binary() -> str | None:
    return shutil.which("Orthanc") or next(
        (p for p in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc") if os.path.exists(p)), None
    )


@contextlib.contextmanager
def running_orthanc(folder: Path, verify: str | bool = True, **overrides: Any) -> Iterator[Orthanc]:
    """Run ``Orthanc CONFIG`` with a generated config in ``folder``; stop it by PID on exit.

    ``overrides`` are merged into the config (e.g. ``SslEnabled`` for HTTPS);
    ``verify`` is what the fixture's own REST calls trust (a CA file for HTTPS).
    """
    pytest.importorskip("dicomweb_client", reason="the dicomweb extra is not installed")
    import requests

    binary = _orthanc_binary()
    plugins = sorted(glob.glob(PLUGIN_GLOB))
    if binary is None:
        pytest.skip("Orthanc is not installed (apt-get install orthanc orthanc-dicomweb)")
    if not plugins:
        pytest.skip(f"the Orthanc DICOMweb plug-in is not installed ({PLUGIN_GLOB})")
    port = free_port()
    lua = folder / "filter.lua"  # lets a test make the server refuse one object
    lua.write_text(
        "function ReceivedInstanceFilter(dicom, origin, info)\n"
        f"  return dicom.SeriesDescription ~= '{REFUSED_DESCRIPTION}'\n"
        "end\n"
    )
    config = {
        "Name": "medm3-test",
        "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"),
        "Plugins": [plugins[-1]],
        "HttpPort": port,
        "DicomServerEnabled": False,
        "DicomPort": free_port(),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "HttpThreadsCount": 4,
        "ConcurrentJobs": 1,
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
        "LuaScripts": [str(lua)],
        **overrides,
    }
    cfg = folder / "orthanc.json"
    cfg.write_text(json.dumps(config, indent=2))
    log = folder / "orthanc.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [binary, str(cfg)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    scheme = "https" if config.get("SslEnabled") else "http"
    server = Orthanc(url=f"{scheme}://127.0.0.1:{port}", process=proc, log=log, verify=verify)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"Orthanc exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                server.rest("GET", "/system")
                break
            except requests.exceptions.RequestException:
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"Orthanc did not answer /system in 60 s: {log.read_text()[-2000:]}"
                    )
                time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """Orthanc with the DICOMweb plug-in over HTTP on loopback (session-wide)."""
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


@pytest.fixture(autouse=True)
def _credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The test user's credentials from the environment; a private instance cache per test."""
    monkeypatch.setenv("MEDM3_DICOMWEB_USER", USER)
    monkeypatch.setenv("MEDM3_DICOMWEB_PASSWORD", PASSWORD)
    monkeypatch.delenv("MEDM3_DICOMWEB_TOKEN", raising=False)
    monkeypatch.delenv("MEDM3_DICOMWEB_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MEDM3_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MEDM3_NO_PROGRESS", "1")


def pydicom_test_files() -> list[Path]:
    """pydicom's bundled dicomdirtests image files (CT, MR, CR series of three studies)."""
    from pydicom.data import get_testdata_file

    readme = get_testdata_file("dicomdirtests/README.txt") or ""
    base = Path(str(readme)).parent
    if not base.is_dir():
        pytest.skip("pydicom's bundled dicomdirtests files are not available")
    return sorted(
        p
        for p in base.rglob("*")
        if p.is_file() and p.relative_to(base).parts[0].isdigit()  # skip DICOMDIRs, TINY_ALPHA
    )


def write_ct_series(folder: Path, ct_path: Path) -> tuple[Path, str, str]:
    """Write the shared CT (NIfTI) as a DICOM CT series with patient/study attributes.

    Returns:
        ``(folder, StudyInstanceUID, SeriesInstanceUID)``.
    """
    import nibabel as nib
    import pydicom
    from pydicom.uid import generate_uid

    from tests.imaging.conftest import write_series

    nii = nib.load(str(ct_path))
    volume = np.asarray(nii.dataobj).astype(np.int16)
    intercept = float(min(-1024, int(volume.min())))
    info = write_series(
        folder,
        volume,
        nii.affine,
        "LPS",
        intercept=intercept,
        description="abdomen 3 mm",
        series_number=3,
    )
    study = generate_uid()
    for path in info.files:
        ds = pydicom.dcmread(path)
        ds.StudyInstanceUID = study
        ds.FrameOfReferenceUID = CT_FOR_UID
        ds.PatientName = "Pacs^Testpatient"
        ds.PatientID = "PACS-CT-0001"
        ds.PatientBirthDate = "19600101"
        ds.PatientSex = "O"
        ds.StudyDate = "20240102"
        ds.StudyTime = "101500"
        ds.StudyID = "CT1"
        ds.AccessionNumber = "ACC-7731"
        ds.ReferringPhysicianName = "Referrer^Ruth"
        ds.InstitutionName = "St Example Hospital"
        ds.save_as(path, enforce_file_format=True)
    return folder, study, info.uid


def non_image_objects(folder: Path, study_uid: str) -> dict[str, Path]:
    """A Basic Text SR and a Grayscale Softcopy Presentation State in ``study_uid``."""
    from pydicom.uid import generate_uid

    from tests.imaging.conftest import base_dataset

    out = {}
    for kind, sop_class, modality in (
        ("sr", "1.2.840.10008.5.1.4.1.1.88.11", "SR"),
        ("pr", "1.2.840.10008.5.1.4.1.1.11.1", "PR"),
    ):
        ds = base_dataset(
            modality=modality,
            series_uid=generate_uid(),
            description=f"{modality} object",
            series_number=90 if kind == "sr" else 91,
            study_uid=study_uid,
            sop_class=sop_class,
        )
        ds.PatientName = "Pacs^Testpatient"
        ds.PatientID = "PACS-CT-0001"
        ds.InstanceNumber = 1
        ds.StudyDate, ds.StudyTime, ds.StudyID = "20240102", "101500", "CT1"
        path = folder / f"{kind}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out[kind] = path
    return out


@pytest.fixture(scope="session")
def pacs(orthanc: Orthanc, tmp_path_factory: pytest.TempPathFactory) -> Orthanc:
    """Orthanc loaded with the test studies; ``orthanc.uploaded`` says what is where."""
    import pydicom

    from tests.conftest import _data_dir

    files = pydicom_test_files()
    for path in files:
        orthanc.upload(path)
    heads = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
    by_series: dict[str, list[Any]] = {}
    for ds in heads:
        by_series.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
    uploaded: dict[str, Any] = {"pydicom": by_series}
    data = _data_dir()
    ct, cxr = data / "ct" / "ct_abdomen_3mm.nii.gz", data / "cxr" / "cxr_monochrome1.dcm"
    if ct.is_file():
        folder, study, series = write_ct_series(tmp_path_factory.mktemp("ct-series"), ct)
        for path in sorted(folder.iterdir()):
            orthanc.upload(path)
        extra = non_image_objects(tmp_path_factory.mktemp("non-image"), study)
        for path in extra.values():
            orthanc.upload(path)
        uploaded["ct"] = {
            "folder": folder,
            "study": study,
            "series": series,
            "nifti": ct,
            "sr": pydicom.dcmread(extra["sr"]),
            "pr": pydicom.dcmread(extra["pr"]),
        }
    if cxr.is_file():
        orthanc.upload(cxr)
        ds = pydicom.dcmread(cxr, stop_before_pixels=True)
        uploaded["cxr"] = {
            "path": cxr,
            "study": str(ds.StudyInstanceUID),
            "series": str(ds.SeriesInstanceUID),
        }
    orthanc.uploaded = uploaded
    return orthanc


def pydicom_series(pacs: Orthanc, folder: str) -> tuple[str, str, list[Any]]:
    """(study, series, headers) of the pydicom test series in ``dicomdirtests/<folder>``."""
    for series_uid, heads in pacs.uploaded["pydicom"].items():
        if any(Path(str(h.filename)).parent.name == folder for h in heads):
            return str(heads[0].StudyInstanceUID), series_uid, heads
    raise AssertionError(f"no pydicom test series in {folder}")


def need(pacs: Orthanc, key: str) -> dict[str, Any]:
    """The uploaded data set ``key`` (``ct``, ``cxr``), or skip when the shared data is absent."""
    if key not in pacs.uploaded:
        pytest.skip(f"shared sample data for {key} not found (set MEDM3_TEST_DATA)")
    return pacs.uploaded[key]
