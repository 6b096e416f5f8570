"""A study from the PACS discussed with a remote (OpenAI-compatible) VLM: no PHI leaves.

The CT series in Orthanc carries a patient name, ID, birth date, accession
number, institution and UIDs. ``m3 chat --backend openai`` reads it by its
DICOMweb reference and talks to a local fake server that records every
request body; the question names the patient. No identifying value of the
uploaded files (computed from the files themselves with ``phi_values``), nor
the study's UID from the reference, may appear in anything sent. With
``--store`` the results go back to the study (SEG + SR with the question).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from medm3.cli.main import main
from medm3.imaging.deid import phi_values
from tests.agent.test_phi_openai import png_chunks, sent_texts
from tests.dicomweb.conftest import Orthanc, need
from tests.dicomweb.test_store import _texts, new_series, series_uids
from tests.vlm.fake_openai_server import FakeOpenAIServer, FakeReply

pytestmark = pytest.mark.usefixtures("fake_experts")


def test_no_phi_from_the_pacs_reaches_a_remote_vlm(
    pacs: Orthanc, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ct = need(pacs, "ct")
    before = series_uids(pacs, ct["study"])
    phi: set[str] = set()
    for path in sorted(ct["folder"].iterdir()):
        phi |= phi_values(pydicom.dcmread(path, stop_before_pixels=True))
    assert {"PACS-CT-0001", "ACC-7731"} <= phi
    question = "Patient Pacs^Testpatient (ID PACS-CT-0001, accession ACC-7731): any bright tissue?"
    script = [
        FakeReply(text=None, tool_calls=[("FAKESEG", {"args": "bright"})]),
        "Some, centrally.",
    ]
    with FakeOpenAIServer(script) as server:
        code = None
        try:
            main(
                ["chat", "--backend", "openai", "--model", "fake-model", "--base-url",
                 server.base_url, "--api-key", "sk-test", "--image", pacs.ref(ct["study"]),
                 "--experts", "fakeseg", "-o", str(tmp_path / "out"), "--json", "--store", question]
            )  # fmt: skip
        except SystemExit as exc:
            code = exc.code
        bodies = server.all_bodies()
    out, err = capsys.readouterr()
    assert code in (None, 0), err
    doc = json.loads(out)
    assert doc["answer"] == "Some, centrally."
    strings = [t for b in bodies for t in sent_texts(json.loads(b), [])]
    images = [t for t in strings if t.startswith("data:image/")]
    assert images
    for url in images:
        assert set(png_chunks(url)) <= {b"IHDR", b"IDAT", b"IEND"}
    text = "\n".join(t for t in strings if not t.startswith("data:image/"))
    assert "[***]" in text  # the identifiers in the question were scrubbed
    assert sorted(v for v in phi if v in text) == []
    assert ct["study"] not in text and "Testpatient" not in text

    # --store: the segmentation, its measurements and the Q/A went to the study (not to the VLM).
    added = new_series(pacs, ct["study"], before)
    assert set(added) == {"SEG", "SR"} and len(doc["stored"]) == 2
    seg = pydicom.dcmread(io.BytesIO(pacs.instance_files(added["SEG"]["ID"])[0]))
    expected = int((np.asarray(nib.load(str(ct["nifti"])).dataobj) > 0).sum())  # FAKESEG(bright)
    assert int(seg.pixel_array.sum()) == expected
    sr = pydicom.dcmread(io.BytesIO(pacs.instance_files(added["SR"]["ID"])[0]))
    texts = _texts(sr)
    assert question in texts and "Some, centrally." in texts and "fake-model" in texts
