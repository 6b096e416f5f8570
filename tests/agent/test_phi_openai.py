"""End to end: nothing identifying from a DICOM input ever reaches an OpenAI-compatible server.

A real CT DICOM (pydicom's CT_small.dcm, with its patient name, IDs, dates,
UIDs and institution) is discussed through ``m3 chat --backend openai``
against a local fake server on 127.0.0.1 that records every request body. The
question itself mentions the patient; the model calls an expert by native
tool call. No PHI value may appear in any recorded byte.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pydicom
import pytest

from medm3.cli.main import main
from medm3.imaging.deid import phi_values
from tests.vlm.fake_openai_server import FakeOpenAIServer, FakeReply

pytestmark = pytest.mark.usefixtures("fake_experts")


def ct_small() -> Path:
    return Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"


def sent_texts(value: object, out: list[str]) -> list[str]:
    """Every string value of a request body (keys and the ``type`` tags excluded)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key != "type":
                sent_texts(item, out)
    elif isinstance(value, list):
        for item in value:
            sent_texts(item, out)
    elif isinstance(value, str):
        out.append(value)
    return out


def png_chunks(data_url: str) -> list[bytes]:
    """Chunk types of a PNG data URL (text chunks would be a metadata leak)."""
    raw = base64.b64decode(data_url.split("base64,", 1)[1])
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, pos = [], 8
    while pos < len(raw):
        length = int.from_bytes(raw[pos : pos + 4], "big")
        chunks.append(raw[pos + 4 : pos + 8])
        pos += 12 + length
    return chunks


def test_no_phi_leaves_the_machine(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    ds = pydicom.dcmread(ct_small())
    phi = phi_values(ds)
    assert str(ds.PatientName).split("^")[0] in " ".join(phi)  # the test has PHI to look for
    name = str(ds.PatientName)
    question = (
        f"Patient {name} (ID {ds.PatientID}), study of {ds.StudyDate}: where is the bright tissue?"
    )
    script = [FakeReply(text=None, tool_calls=[("FAKESEG", {"args": "bright"})]), "In the centre."]
    with FakeOpenAIServer(script) as server:
        code = None
        try:
            main(
                [
                    "chat",
                    "--backend",
                    "openai",
                    "--model",
                    "fake-model",
                    "--base-url",
                    server.base_url,
                    "--api-key",
                    "sk-test",
                    "--image",
                    str(ct_small()),
                    "--experts",
                    "fakeseg",
                    "-o",
                    str(tmp_path / "out"),
                    "--json",
                    question,
                ]
            )
        except SystemExit as exc:
            code = exc.code
        bodies = server.all_bodies()
    assert code in (None, 0)
    doc = json.loads(capsys.readouterr().out)
    assert doc["answer"] == "In the centre." and doc["rounds"] == 1
    assert len(bodies) == 2
    strings = [t for b in bodies for t in sent_texts(json.loads(b), [])]
    images = [t for t in strings if t.startswith("data:image/")]
    # the view in both requests (history), then the overlay: pixels only
    assert len(images) == 3
    for url in images:
        assert set(png_chunks(url)) <= {b"IHDR", b"IDAT", b"IEND"}
    text = "\n".join(t for t in strings if not t.startswith("data:image/"))
    assert "[***]" in text  # the question's identifiers were scrubbed, not dropped
    leaked = sorted(v for v in phi if v in text)
    assert leaked == []
