"""A session's own label map (``medm3.mask``) and label table (``medm3.labels``): MEASURE
measures the user's mask as ``m3 chat --mask --labels`` does, through the real app."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.serve.conftest import SCRIPT, last_user_text

from medm3 import prompts
from medm3.vlm.mock import MockBackend


def measure_then_answer(messages: list[Any]) -> str:
    """Mock model: MEASURE the right kidney, then answer."""
    if prompts.MEASUREMENT_HEADER in last_user_text(messages):
        return "The right kidney was measured."
    return "<MEASURE(right kidney)>"


def _client(client_for: Any, **settings: Any) -> Any:
    settings.setdefault("protocol", "medm3")
    return client_for(MockBackend("mock", script=measure_then_answer), **settings)


def _upload(client: Any, path: Path) -> str:
    with open(path, "rb") as fh:
        r = client.post("/v1/files", files={"file": (path.name, fh)})
    assert r.status_code == 200, r.text
    return r.json()["id"]


def _ask(client: Any, medm3: dict[str, Any], image: str | None = None, **extra: Any) -> Any:
    content: list[dict[str, Any]] = [{"type": "text", "text": "How big is the right kidney?"}]
    if image:
        content.append({"type": "file", "file": {"file_id": image}})
    body = {"model": "mock", "messages": [{"role": "user", "content": content}], "medm3": medm3}
    return client.post("/v1/chat/completions", json={**body, **extra})


def _measured(body: dict[str, Any]) -> list[dict[str, Any]]:
    (step,) = [s for s in body["medm3"]["trace"] if s["step"] == "expert"]
    assert step["expert"] == "measure"
    return step["result"]["measurements"]


def test_measure_measures_the_sessions_mask_as_m3_chat_does(
    client_for: Any, ct_path: Path, ct_labels_path: Path, tmp_path: Path, capsys
) -> None:
    from tests.cli.helpers import run

    client = _client(client_for)
    ct, labels = _upload(client, ct_path), _upload(client, ct_labels_path)
    r = _ask(client, {"mask": labels, "labels": "totalseg-ct", "experts": ["measure"]}, ct)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["message"]["content"] == "The right kidney was measured."
    (row,) = _measured(body)
    assert row["name"] == "kidney_right" and row["voxels"] == _measured_voxels(ct_labels_path, 2)
    assert body["medm3"]["mask"] == {
        "file_id": labels,
        "labels": "totalseg-ct",
        "note": "label names from the built-in table 'totalseg-ct'",
    }
    # the same question through `m3 chat --mask --labels`: the same measurements
    script = tmp_path / "replies.txt"
    script.write_text("<MEASURE(right kidney)>\n---\nThe right kidney was measured.\n")
    code, out, err = run(
        [
            "chat", "--backend", "mock", "--mock-script", str(script), "--protocol", "medm3",
            "--experts", "measure", "--image", str(ct_path), "--mask", str(ct_labels_path),
            "--labels", "totalseg-ct", "-o", str(tmp_path / "cli"), "--json", "Right kidney?",
        ],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    cli_step = next(s for s in json.loads(out)["trace"] if s["step"] == "expert")
    assert cli_step["result"]["measurements"] == [row]
    assert cli_step["result"]["text"] == _step(body)["result"]["text"]


def _step(body: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in body["medm3"]["trace"] if s["step"] == "expert")


def test_mask_labels_detected_and_kept_across_a_restart(
    make_app: Any, ct_path: Path, ct_labels_path: Path
) -> None:
    """``labels`` omitted: the names come from the file's header; a follow-up after a
    restart (same data folder) still measures the session's mask."""
    from fastapi.testclient import TestClient

    vlm = MockBackend("mock", script=measure_then_answer)
    with TestClient(make_app(vlm, protocol="medm3"), headers=SCRIPT) as client:
        ct, labels = _upload(client, ct_path), _upload(client, ct_labels_path)
        r = _ask(client, {"mask": labels, "experts": ["measure"]}, ct)
        assert r.status_code == 200, r.text
        first = r.json()["medm3"]
        assert first["mask"]["labels"] == "auto"
        assert first["mask"]["note"] == "label names read from the file's header"
        assert _measured(r.json())[0]["name"] == "kidney_right"
        session = client.get(f"/v1/sessions/{first['session_id']}").json()
        assert session["images"] == {"image": ct, "mask": labels}
    vlm = MockBackend("mock", script=measure_then_answer)
    with TestClient(make_app(vlm, protocol="medm3"), headers=SCRIPT) as client:
        r = _ask(client, {}, ct, session_id=first["session_id"])  # the scan resent: same study
        assert r.status_code == 200, r.text
        assert _measured(r.json())[0]["voxels"] == _measured_voxels(ct_labels_path, 2)
        assert r.json()["medm3"]["mask"]["file_id"] == labels


def _measured_voxels(path: Path, label: int) -> int:
    import nibabel as nib

    return int((np.asarray(nib.load(path).dataobj) == label).sum())


def test_ambiguous_ids_are_said_in_the_servers_words(
    client_for: Any, ct_path: Path, tmp_path: Path
) -> None:
    """Ids that fit two CT tables (no table in the header): the note asks for medm3.labels."""
    import nibabel as nib

    ct = nib.load(ct_path)
    data = np.zeros(ct.shape, np.uint8)
    data[10:20, 10:20, 5:10], data[30:40, 30:40, 5:10], data[50:60, 50:60, 5:10] = 1, 2, 3
    path = tmp_path / "three_labels.nii.gz"
    nib.save(nib.Nifti1Image(data, ct.affine), path)
    client = client_for(protocol="medm3")  # the echo model: no expert call needed
    r = _ask(client, {"mask": _upload(client, path)}, _upload(client, ct_path))
    assert r.status_code == 200, r.text
    note = r.json()["medm3"]["mask"]["note"]
    assert note.startswith("label ids fit several built-in tables (totalseg-ct, ")
    assert note.endswith("; pass medm3.labels NAME to choose") and "--labels" not in note


@pytest.fixture
def small_mask(tmp_path: Path) -> Path:
    """A label map on another grid than the CT (10x10x10)."""
    import nibabel as nib

    data = np.zeros((10, 10, 10), np.uint8)
    data[2:5, 2:5, 2:5] = 1
    path = tmp_path / "small_labels.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


@pytest.mark.parametrize(
    ("case", "status", "param", "needle"),
    [
        ("unknown_table", 400, "medm3.labels", "Input should be 'auto', 'totalseg-ct'"),
        ("other_grid", 400, "medm3.mask", "does not fit the image"),
        ("not_labels", 400, "medm3.mask", "is not a label map"),
        ("labels_alone", 400, "medm3.labels", "give medm3.mask too"),
        ("two_scans", 400, "medm3.mask", "goes with one image"),
        ("unknown_file", 404, "medm3.mask", "no file with id"),
    ],
)
def test_bad_masks_get_one_clear_4xx(
    client_for: Any,
    ct_path: Path,
    ct_labels_path: Path,
    small_mask: Path,
    case: str,
    status: int,
    param: str,
    needle: str,
) -> None:
    client = _client(client_for)
    ct = _upload(client, ct_path)
    options: dict[str, Any] = {
        "unknown_table": {"mask": _upload(client, ct_labels_path), "labels": "totalseg"},
        "other_grid": {"mask": _upload(client, small_mask)},
        "not_labels": {"mask": _upload(client, ct_path)},
        "labels_alone": {"labels": "vista3d"},
        "two_scans": {"images": {"a": ct, "b": ct}, "mask": _upload(client, ct_labels_path)},
        "unknown_file": {"mask": "file-" + "0" * 24},
    }[case]
    r = _ask(client, options, None if "images" in options else ct)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["param"] == param and needle in error["message"], error
    assert "\n" not in error["message"] and str(client.app.state.service.root) not in r.text
    assert client.get("/health").json()["running"] == 0  # refused before any model work


def test_a_mask_is_uploaded_through_the_same_guard(client_for: Any) -> None:
    """A mask is an ordinary upload: content that is no scan never becomes a file."""
    client = _client(client_for)
    r = client.post("/v1/files", files={"file": ("labels.nii.gz", b"not a label map at all")})
    assert r.status_code == 415, r.text
    assert client.get("/v1/files").json()["data"] == []


def test_openapi_schema_documents_mask_and_labels(client_for: Any) -> None:
    from medm3.imaging.label_tables import table_names

    schema = client_for().get("/openapi.json").json()
    props = schema["components"]["schemas"]["Medm3Options"]["properties"]
    assert "label map" in props["mask"]["description"]
    enum = next(a for a in props["labels"]["anyOf"] if "enum" in a)["enum"]
    assert enum == ["auto", *table_names()]


def test_the_expert_run_route_names_and_checks_the_mask_as_chat_does(
    client_for: Any, ct_path: Path, ct_labels_path: Path
) -> None:
    """POST /v1/experts/measure/run with inputs.mask takes `labels` and the same checks."""
    client = _client(client_for)
    ct, labels = _upload(client, ct_path), _upload(client, ct_labels_path)
    body = {"inputs": {"image": ct, "mask": labels}, "args": "right kidney"}
    r = client.post("/v1/experts/measure/run", json={**body, "labels": "totalseg-ct"})
    assert r.status_code == 200, r.text
    (row,) = r.json()["result"]["measurements"]
    assert row["name"] == "kidney_right" and row["label"] == 2
    r = client.post("/v1/experts/measure/run", json={**body, "labels": "vista3d"})
    assert r.status_code == 200, r.text
    (row,) = r.json()["result"]["measurements"]
    assert row["label"] == 5  # the table chosen decides: VISTA3D calls id 5 "right kidney"

    scan_as_mask = {"inputs": {"image": ct, "mask": ct}, "args": "all"}
    r = client.post("/v1/experts/measure/run", json=scan_as_mask)
    err = r.json()["error"]
    assert r.status_code == 400 and err["code"] == "not_a_label_map"
    assert err["param"] == "inputs.mask"
    r = client.post("/v1/experts/measure/run", json={"file_id": ct, "labels": "totalseg-ct"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "labels"
    r = client.post("/v1/experts/measure/run", json={**body, "labels": "no-such-table"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "labels"
