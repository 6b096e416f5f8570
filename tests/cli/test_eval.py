"""`m3 eval`: list, run (scripted backend), score, report; one-line errors, nothing partial."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from medm3.vlm.base import Message
from medm3.vlm.mock import MockBackend
from medm3.vlm.registry import BACKENDS
from tests.cli.helpers import assert_one_line_error as one_line_error
from tests.cli.helpers import run
from tests.eval import fixtures


class ScriptedBackend(MockBackend):
    """``--backend evalmock``: answers 'yes' to fracture questions, else 'no'."""

    name = "evalmock"
    interrupt = False

    def __init__(self, model_id: str, **_: Any) -> None:
        super().__init__(model_id, script=self._answer_for)

    def _answer_for(self, messages: list[Message]) -> str:
        if self.interrupt and "air" in messages[-1].plain_text:
            raise KeyboardInterrupt
        return "yes" if "fracture" in messages[-1].plain_text else "no"


@pytest.fixture(autouse=True)
def _backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(BACKENDS._loaded, "evalmock", ScriptedBackend)


def _run_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "eval",
        "run",
        "vqa-rad",
        "--backend",
        "evalmock",
        "--model",
        "m",
        "--data",
        str(data),
        "-o",
        str(out),
        *extra,
    ]


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["eval", "list"], capsys)
    assert code == 0
    assert out.splitlines()[0].split() == ["TASK", "PROTOCOLS", "EXPERTS", "HEADLINE"]
    row = next(line for line in out.splitlines() if line.startswith("vqa-rad"))
    assert "vila-m3,llava-med" in row and "accuracy/closed" in row


def test_run_report_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = fixtures.llava_vqa(tmp_path / "data")
    code, out, err = run(_run_args(data, tmp_path / "run", "--batch-size", "2"), capsys)
    assert code == 0, err
    # r1 yes (right), r2 no (right), r6 no (truth yes)
    assert out.startswith("vqa-rad [protocol vila-m3] accuracy = 66.67 (n=3, 3 generated now)")
    assert "vqa-rad [vila-m3]" in err  # progress bar on stderr
    assert (tmp_path / "run" / "run.json").is_file()
    code, out, _ = run([*_run_args(data, tmp_path / "run"), "--json", "--quiet"], capsys)
    payload = json.loads(out)
    assert payload["n_generated"] == 0 and payload["metrics"]["accuracy"] == pytest.approx(200 / 3)
    chart = tmp_path / "chart.png"
    code, out, err = run(["eval", "report", str(tmp_path / "run"), "-o", str(chart)], capsys)
    assert code == 0, err
    assert "| VQA-RAD | vila-m3 | accuracy | 3 | 66.7 (m) | 78.2 | 84.5 | 80.5 |" in out
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_interrupt_keeps_predictions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = fixtures.llava_vqa(tmp_path / "data")
    monkeypatch.setattr(ScriptedBackend, "interrupt", True)
    code, _, err = run(_run_args(data, tmp_path / "run", "--batch-size", "1", "--quiet"), capsys)
    assert code == 130 and "run the same command again to resume" in err
    assert len((tmp_path / "run" / "predictions.jsonl").read_text().splitlines()) == 2
    monkeypatch.setattr(ScriptedBackend, "interrupt", False)
    code, out, _ = run(_run_args(data, tmp_path / "run", "--quiet"), capsys)
    assert code == 0 and "(n=3, 1 generated now)" in out


def test_score_llava_med_answer_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gt = [
        {
            "id": 1,
            "answer_type": "CLOSED",
            "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "no"}],
        },
        {
            "id": 2,
            "answer_type": "OPEN",
            "conversations": [
                {"from": "human", "value": "q"},
                {"from": "gpt", "value": "left lung"},
            ],
        },
    ]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    preds = [
        {
            "question_id": 1,
            "prompt": "q",
            "text": "It is normal.",
            "answer_id": "x",
            "model_id": "m",
            "metadata": {},
        },
        {"question_id": 2, "text": "the left lung"},
        {"question_id": 99, "text": "extra"},
    ]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    args = [
        "eval",
        "score",
        "--answers",
        str(tmp_path / "gt.json"),
        "--predictions",
        str(tmp_path / "p.jsonl"),
    ]
    code, out, _ = run([*args, "--protocol", "llava-med", "--json"], capsys)
    assert code == 0
    payload = json.loads(out)
    assert payload["metrics"]["closed"] == 100.0  # 'normal' holds 'no'
    assert payload["metrics"]["open_recall"] == 100.0
    assert any("1 prediction(s) for ids not in the ground truth" in n for n in payload["notes"])
    code, out, _ = run([*args, "--protocol", "vila-m3"], capsys)
    assert code == 0 and "accuracy: 0.00" in out and "protocol vila-m3:" in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["eval", "run", "vqarad", "--backend", "evalmock", "--model", "m"],
            "Did you mean 'vqa-rad'",
        ),
        (
            ["eval", "run", "vqa-rad", "--backend", "evalmock", "--model", "m", "--experts", "on"],
            "no expert variant",
        ),
        (
            [
                "eval",
                "run",
                "cxr14-cls",
                "--backend",
                "evalmock",
                "--model",
                "m",
                "--protocol",
                "llava-med",
            ],
            "has no 'llava-med'",
        ),
        (["eval", "run", "vqa-rad", "--backend", "nope", "--model", "m"], "unknown backend 'nope'"),
        (["eval", "run", "vqa-rad", "--backend", "evalmock"], "has no default model"),
        (
            ["eval", "run", "vqa-rad", "--backend", "evalmock", "--model", "m", "--limit", "0"],
            "--limit",
        ),
    ],
)
def test_run_errors_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str
) -> None:
    data = fixtures.llava_vqa(tmp_path / "data")
    code, _, err = run([*args, "--data", str(data), "-o", str(tmp_path / "run")], capsys)
    one_line_error(code, err, needle)
    assert not (tmp_path / "run").exists()


def test_missing_data_and_bad_report_inputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(_run_args(tmp_path / "nope.json", tmp_path / "run"), capsys)
    one_line_error(code, err, "data not found")
    assert not (tmp_path / "run").exists()
    code, _, err = run(["eval", "report", str(tmp_path)], capsys)
    one_line_error(code, err, "no run.json found")
    code, _, err = run(["eval", "report", str(tmp_path), "-o", str(tmp_path / "c.jpg")], capsys)
    one_line_error(code, err, "give a .png path")
    args = ["eval", "score", "--protocol", "vila-m3", "--answers", str(tmp_path / "gt.json")]
    code, _, err = run([*args, "--predictions", str(tmp_path / "p.jsonl")], capsys)
    one_line_error(code, err, "predictions file not found")
    (tmp_path / "p.jsonl").write_text('{"question_id": 1, "text": "a"}\nnot json\n')
    (tmp_path / "gt.json").write_text('[{"id": 1, "answer": "a"}]')
    code, _, err = run([*args, "--predictions", str(tmp_path / "p.jsonl")], capsys)
    one_line_error(code, err, "line 2 is not a complete JSON record")


def test_eval_help_does_not_import_torch() -> None:
    code = (
        "import sys; from medm3.cli.main import main\n"
        "try:\n    main(['eval', '--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "score" in result.stdout and "report" in result.stdout


def test_missing_expert_weights_fail_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fixtures.cxr14_labels(tmp_path / "data")
    args = ["eval", "run", "cxr14-cls", "--backend", "evalmock", "--model", "m", "--experts", "on"]
    code, _, err = run(
        [*args, "--data", str(tmp_path / "data"), "-o", str(tmp_path / "run")], capsys
    )
    assert code == 3 and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("m3: error:")
    assert not (tmp_path / "run").exists()


def test_report_task_without_java_fails_before_writing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from medm3.eval.scorers import report as report_scorer

    monkeypatch.setattr(report_scorer.shutil, "which", lambda name: None)
    fixtures.mimic_reports(tmp_path / "data")
    args = ["eval", "run", "mimic-cxr-report", "--backend", "evalmock", "--model", "m"]
    code, _, err = run(
        [*args, "--data", str(tmp_path / "data"), "-o", str(tmp_path / "run")], capsys
    )
    assert code == 1 and "need Java" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
