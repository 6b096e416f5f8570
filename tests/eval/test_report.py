"""`m3 eval report` building blocks: rows, markdown, published numbers, charts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from medm3.errors import InputError
from medm3.eval.published import PUBLISHED, lookup
from medm3.eval.report import build_rows, load_run, markdown, write_chart
from medm3.eval.runner import run_eval
from medm3.vlm.mock import MockBackend
from tests.eval import fixtures


def test_published_table() -> None:
    vila = {p.model: p.value for p in lookup("vqa-rad", "accuracy") if p.protocol == "vila-m3"}
    assert vila == {"VILA-M3 3B": 78.2, "VILA-M3 8B": 84.5, "VILA-M3 13B": 80.5}
    med = [p for p in lookup("vqa-rad", "closed") if p.protocol == "llava-med"]
    assert [(p.model, p.value) for p in med] == [("LLaVA-Med", 84.2)]
    with_expert = {p.model: p.value for p in lookup("chexpert-cls", "f1_macro", True)}
    assert with_expert["VILA-M3 13B"] == 61.5 and with_expert["TorchXRayVision"] == 51.5
    assert with_expert["Med-Gemini-1.5T"] == 48.3
    assert {p.value for p in lookup("cxr14-cls", "f1_macro", False) if "VILA" in p.model} == {
        48.4,
        45.9,
        49.9,
    }
    assert all(p.protocol in ("vila-m3", "llava-med", "med-gemini") for p in PUBLISHED)


def _runs(tmp_path: Path) -> list[dict[str, Any]]:
    data = fixtures.llava_vqa(tmp_path / "data")
    run_eval("vqa-rad", MockBackend("m8b", script=lambda m: "yes"), data, tmp_path / "a")
    run_eval(
        "vqa-rad",
        MockBackend("m8b", script=lambda m: "yes"),
        data,
        tmp_path / "b",
        protocol="llava-med",
        limit=2,
    )
    fixtures.cxr14_labels(tmp_path / "c")
    run_eval(
        "cxr14-cls", MockBackend("m8b", script=lambda m: "no"), tmp_path / "c", tmp_path / "c_run"
    )
    return [load_run(tmp_path / d) for d in ("a", "b", "c_run")]


def test_markdown_marks_protocols_and_partial_runs(tmp_path: Path) -> None:
    logs = _runs(tmp_path)
    report_log = {
        "medm3_eval_log": 1,
        "task": "mimic-cxr-report",
        "title": "MIMIC-CXR report",
        "protocol": "vila-m3",
        "model": {"model_id": "m8b"},
        "metrics": {"bleu_4": 12.5, "green": None, "n": 10, "unavailable": {"green": "no GPU"}},
    }
    rows = build_rows([*logs, report_log])
    text = markdown(rows)
    lines = text.splitlines()
    assert lines[0] == (
        "| Task | Protocol | Metric | n | Ours | VILA-M3 3B | VILA-M3 8B | VILA-M3 13B "
        "| Med-Gemini-1.5T | LLaVA-Med | TorchXRayVision |"
    )
    assert (
        "| VQA-RAD | vila-m3 | accuracy | 3 | 66.7 (m8b) | 78.2 | 84.5 | 80.5 | 78.8† | 84.2† | — |"
        in lines
    )
    assert any(
        line.startswith(
            "| VQA-RAD | llava-med | closed | 2 | 50.0* (m8b) "
            "| 78.2† | 84.5† | 80.5† | 78.8† | 84.2 |"
        )
        for line in lines
    )
    assert any(
        line.startswith("| VQA-RAD | llava-med | open_recall | 0 | n/a* (m8b) |") for line in lines
    )
    assert any(
        line.startswith(
            "| ChestX-ray14 (Google labels) (no expert) | vila-m3 | f1_macro | 12 | 0.0"
        )
        and "| 48.4 | 45.9 | 49.9 | 46.7† | — | 50.0 |" in line
        for line in lines
    )
    assert any(
        line.startswith("| MIMIC-CXR report | vila-m3 | green | 10 | n/a‡") for line in lines
    )
    assert "- protocol `llava-med`: LLaVA-Med v1.0 run_eval" in text
    assert "† published under another protocol" in text and "`med-gemini`" in text
    assert "* not the full protocol: VQA-RAD: --limit 2 of 5" in text
    assert "‡ unavailable here: green: no GPU" in text


@pytest.mark.parametrize("engine", ["matplotlib", "pil"])
def test_chart_png(tmp_path: Path, engine: str) -> None:
    if engine == "matplotlib":
        pytest.importorskip("matplotlib")
    rows = build_rows(_runs(tmp_path))
    out = write_chart(rows, tmp_path / "out" / "chart.png", engine=engine)
    from PIL import Image

    with Image.open(out) as img:
        assert img.format == "PNG" and img.width > 200 and img.height > 200
    assert [p.name for p in out.parent.iterdir()] == ["chart.png"]  # no temporary file left


def test_load_run_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="has not finished"):
        load_run(tmp_path)
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(InputError, match="not an m3 eval run log"):
        load_run(tmp_path)
