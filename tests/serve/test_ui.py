"""The web UI without a browser: mounting, login with the API key, and the event handlers."""

from __future__ import annotations

import copy
import zipfile
from pathlib import Path
from typing import Any

import pytest
from tests.serve.conftest import segment_then_answer

from medm3.vlm.mock import MockBackend

pytest.importorskip("gradio")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.*")


def test_ui_is_mounted_and_needs_the_key_when_keys_are_set(client_for: Any) -> None:
    open_client = client_for(ui=True)
    assert open_client.get("/ui/").status_code == 200
    assert open_client.get("/ui/config").status_code == 200
    client = client_for(ui=True, api_keys=("k1",))
    assert client.get("/ui/config").status_code == 401
    assert client.post("/ui/login", data={"username": "x", "password": "nope"}).status_code == 400
    assert client.post("/ui/login", data={"username": "x", "password": "k1"}).status_code == 200
    assert client.get("/ui/config").status_code == 200


def test_ui_routes_pass_the_guard_from_its_own_origin_only(
    client_for: Any, png_bytes: bytes
) -> None:
    client = client_for(ui=True)
    own = {"Origin": "http://testserver"}
    r = client.post("/ui/gradio_api/upload", files={"files": ("a.png", png_bytes)}, headers=own)
    assert r.status_code == 200, r.text
    evil = {"Origin": "http://evil.example"}
    r = client.post("/ui/gradio_api/upload", files={"files": ("a.png", png_bytes)}, headers=evil)
    assert r.status_code == 403 and r.json()["error"]["code"] == "cross_origin"
    r = client.get("/ui/", headers={"Host": "evil.example"})
    assert r.status_code == 400


def test_gradio_analytics_are_off(client_for: Any) -> None:
    import os

    from medm3.serve.ui import build_ui

    client = client_for(ui=True)
    assert os.environ["GRADIO_ANALYTICS_ENABLED"] == "False"
    assert build_ui(client.app.state.service).analytics_enabled is False


def test_handlers_upload_view_ask_download(
    client_for: Any, fake_experts: None, ct_path: Path, tmp_path: Path
) -> None:
    from medm3.serve.ui import _Handlers

    client = client_for(MockBackend("mock", script=segment_then_answer))
    svc = client.app.state.service
    h = _Handlers(svc)
    dropped = tmp_path / "gradio-upload" / ct_path.name
    dropped.parent.mkdir()
    dropped.write_bytes(ct_path.read_bytes())
    file_id, session_id, info, slider, view, _chat, _trace, _dl, dropdown, box = h.upload(
        str(dropped), "axial", "auto"
    )
    assert not dropped.exists() and box is None  # Gradio's copy is removed
    assert file_id.startswith("file-") and session_id is None
    assert "CT, 122x101x30" in info
    assert slider["maximum"] == 29 and slider["value"] == 15
    assert view.size[0] >= 256 and view.info["medm3"]["index"] == 15
    assert (file_id) in [v for _, v in dropdown["choices"]]
    slider, view = h.plane_changed(file_id, "coronal", "lung")
    assert slider["maximum"] == 100 and view.info["medm3"]["plane"] == "coronal"
    assert h.view(file_id, "axial", 99, "bone").info["medm3"]["index"] == 29  # clamped
    # copies: the handler updates the same history in place between yields, as Gradio allows
    updates = [
        copy.deepcopy(u)
        for u in h.ask("Where is it bright?", [], file_id, None, "axial", 20, "auto")
    ]
    history, session_id, cleared, trace, download = updates[-1]
    assert session_id.startswith("sess-") and cleared == ""
    assert history[0] == {"role": "user", "content": "Where is it bright?"}
    assert history[1]["content"] == "The bright region is shown in red."
    assert history[2]["content"].startswith("*FAKESEG: ")
    assert Path(history[3]["content"]["path"]).is_file()
    assert [s["step"] for s in trace].count("expert") == 1
    names = zipfile.ZipFile(download).namelist()
    assert "trace.json" in names and any(n.endswith(".png") for n in names)
    assert any("*[expert <FAKESEG(bright)> done]*" in u[0][1]["content"] for u in updates[:-1])
    # a second question continues the session without re-sending the scan
    follow = list(h.ask("And now?", history, file_id, session_id, "axial", 20, "auto"))[-1]
    assert follow[1] == session_id
    assert len(svc.store.messages(session_id)) == 4


def test_library_scans_are_listed_and_opened(client_for: Any, ct_path: Path) -> None:
    from medm3.serve.ui import _Handlers

    client = client_for()
    svc = client.app.state.service
    (svc.root / "library" / "studies").mkdir()
    (svc.root / "library" / "studies" / "ct.nii.gz").write_bytes(ct_path.read_bytes())
    (svc.root / "library" / "notes.txt").write_text("not a scan")
    h = _Handlers(svc)
    assert h.choices() == [("library/studies/ct.nii.gz", "library:studies/ct.nii.gz")]
    opened = h.open("library:studies/ct.nii.gz", "axial", "auto")
    rec = svc.store.get_file(opened[0])
    assert rec.purpose == "library" and rec.path == "library/studies/ct.nii.gz"
    assert h.open("library:studies/ct.nii.gz", "axial", "auto")[0] == rec.id  # registered once
    assert [v for _, v in h.choices()] == [rec.id]
    with pytest.raises(Exception, match="no such library scan"):
        h.open("library:../medm3.sqlite3", "axial", "auto")


def test_handlers_mask_is_measured_in_a_new_conversation(
    client_for: Any, ct_path: Path, ct_labels_path: Path, tmp_path: Path
) -> None:
    """The UI's mask box: uploaded through the same checks, checked against the open scan,
    named by the chosen table, and measured by MEASURE in the conversation it starts."""
    from tests.serve.test_mask import measure_then_answer

    from medm3.serve.ui import _Handlers

    client = client_for(MockBackend("mock", script=measure_then_answer), protocol="medm3")
    h = _Handlers(client.app.state.service)

    def dropped(path: Path) -> str:
        copy_path = tmp_path / "gradio" / path.name
        copy_path.parent.mkdir(exist_ok=True)
        copy_path.write_bytes(path.read_bytes())
        return str(copy_path)

    with pytest.raises(Exception, match="open the scan the mask labels first"):
        h.upload_mask(dropped(ct_labels_path), None, "auto")
    file_id = h.upload(dropped(ct_path), "axial", "auto")[0]
    with pytest.raises(Exception, match="is not a label map"):
        h.upload_mask(dropped(ct_path), file_id, "auto")
    mask_id, note, box, chat, session_id, _trace, _dl = h.upload_mask(
        dropped(ct_labels_path), file_id, "totalseg-ct"
    )
    assert mask_id.startswith("file-") and box is None and chat == [] and session_id is None
    assert "built-in table 'totalseg-ct'" in note
    assert "header" in h.labels_changed(mask_id, file_id, "auto")[0]
    assert all(v != mask_id for _, v in h.choices())  # masks are not offered as scans
    args = ("Right kidney?", [], file_id, None, "axial", 15, "auto", mask_id, "totalseg-ct")
    _history, session_id, _, trace, _ = list(h.ask(*args))[-1]
    (step,) = [s for s in trace if s["step"] == "expert"]
    assert step["expert"] == "measure"
    assert step["result"]["measurements"][0]["name"] == "kidney_right"
    assert client.get(f"/v1/sessions/{session_id}").json()["images"]["mask"] == mask_id


def test_ui_sessions_belong_to_the_key_that_signed_in(client_for: Any, png_bytes: bytes) -> None:
    """With several keys, a UI session is bound to the signed-in key as API sessions are:
    the other key can neither read it through the API nor continue it in the UI."""
    from types import SimpleNamespace

    from medm3.serve.ui import _Handlers

    client = client_for(ui=True, api_keys=("k1", "k2"))
    # Gradio's own login: a user name belongs to the key that first signed in with it
    assert client.post("/ui/login", data={"username": "ann", "password": "k1"}).status_code == 200
    assert client.post("/ui/login", data={"username": "ann", "password": "k2"}).status_code == 400
    assert client.post("/ui/login", data={"username": "bob", "password": "k2"}).status_code == 200
    svc = client.app.state.service
    h = _Handlers(svc, client.app.state.ui_logins)  # the sign-ins the mounted UI checked
    ann, bob = SimpleNamespace(username="ann"), SimpleNamespace(username="bob")
    final = list(h.ask("hello", [], None, None, "axial", 0, "auto", request=ann))[-1]
    session_id, archive = final[1], final[4]
    assert session_id.startswith("sess-") and archive is not None
    k1, k2 = {"Authorization": "Bearer k1"}, {"Authorization": "Bearer k2"}
    assert client.get(f"/v1/sessions/{session_id}", headers=k1).status_code == 200
    assert client.get(f"/v1/sessions/{session_id}", headers=k2).status_code == 404
    with pytest.raises(Exception, match="no session with id"):
        list(h.ask("more", [], None, session_id, "axial", 0, "auto", request=bob))
    assert h.archive(session_id, h.owner(bob)) is None
    assert len(list(h.ask("more", [], None, session_id, "axial", 0, "auto", request=ann))) > 1
    with pytest.raises(Exception, match="sign in again"):
        h.owner(SimpleNamespace(username="mallory"))  # never signed in
