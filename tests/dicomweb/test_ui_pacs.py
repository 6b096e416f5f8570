"""``m3 serve --dicomweb``: the UI's PACS panel against a real Orthanc (handlers, no browser).

Search by patient ID, open the CT series (retrieved, then ingested with
de-identification like an upload), ask the (scripted) model, which calls the
FAKESEG test double, then store the results with the panel's button: the SEG
and SR must appear in the source study and match what was segmented.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest

from tests.dicomweb.conftest import Orthanc, need
from tests.dicomweb.test_store import _texts, new_series, series_uids

pytest.importorskip("gradio")
pytest.importorskip("highdicom")
from tests.serve import conftest as _serve

# The server fixtures, shared with tests/serve (a conftest's fixtures are per folder).
make_app = _serve.make_app
client_for = _serve.client_for
segment_then_answer = _serve.segment_then_answer

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.*"),
    pytest.mark.usefixtures("fake_experts"),
]


def test_browse_open_ask_store(pacs: Orthanc, client_for: Any) -> None:
    from medm3.serve.ui import _Handlers
    from medm3.serve.ui_pacs import PacsHandlers
    from medm3.vlm.mock import MockBackend

    ct = need(pacs, "ct")
    client = client_for(
        MockBackend("mock", script=segment_then_answer), dicomweb="dicomweb+" + pacs.root, ui=True
    )
    assert "m3-pacs-store" in client.get("/ui/config").text  # the panel is in the UI
    svc = client.app.state.service
    h, panel = _Handlers(svc), PacsHandlers(svc, svc.settings.dicomweb)

    found = panel.search("PACS-CT-0001", "", "")
    assert [ref for _, ref in found] == [pacs.ref(ct["study"], ct["series"])]  # no SR, no PR
    assert "PACS-CT-0001  20240102  CT" in found[0][0] and "(30 images)" in found[0][0]
    assert panel.search("NOBODY", "", "") == []
    assert {ref for _, ref in panel.search("", "20240102", "CT")} == {found[0][1]}

    file_id = panel.open_series(found[0][1])
    rec = svc.files.record(file_id)
    assert rec.deidentified  # the served copy went through de-identification
    opened = h._opened(file_id, "axial", "auto")
    assert "CT, 122x101x30" in opened[2]
    updates = [
        copy.deepcopy(u)
        for u in h.ask("Where is it bright?", [], file_id, None, "axial", 15, "auto")
    ]
    _, session_id, _, _, _ = updates[-1]

    before = series_uids(pacs, ct["study"])
    status = panel.store(file_id, session_id)
    assert status.startswith("Stored in the PACS study: SEG ")
    added = new_series(pacs, ct["study"], before)
    assert set(added) == {"SEG", "SR"}
    seg = pydicom.dcmread(io.BytesIO(pacs.instance_files(added["SEG"]["ID"])[0]))
    sr = pydicom.dcmread(io.BytesIO(pacs.instance_files(added["SR"]["ID"])[0]))
    # FAKESEG(bright) labels the voxels above 0: count them in the NIfTI the series came from.
    expected = int((np.asarray(nib.load(str(ct["nifti"])).dataobj) > 0).sum())
    assert int(seg.pixel_array.sum()) == expected
    assert {str(s.SeriesInstanceUID) for s in seg.ReferencedSeriesSequence} == {ct["series"]}
    assert str(seg.PatientID) == "PACS-CT-0001"  # the original study, not the de-identified copy
    texts = _texts(sr)
    assert "Where is it bright?" in texts and "The bright region is shown in red." in texts
    assert "mock" in texts  # the device observer is the served model


def test_store_needs_a_pacs_scan_and_a_result(
    pacs: Orthanc, client_for: Any, ct_path: Path
) -> None:
    from medm3.errors import InputError
    from medm3.serve.ui_pacs import PacsHandlers

    client = client_for(dicomweb="dicomweb+" + pacs.root)
    panel = PacsHandlers(client.app.state.service, "dicomweb+" + pacs.root)
    with pytest.raises(InputError, match="open a series from the PACS first"):
        panel.store("file-unknown", "sess-x")
    with pytest.raises(InputError, match="not a DICOMweb reference"):
        client_for(dicomweb="https://pacs.example.org/dicom-web")
