"""Runs end to end on tiny fixtures: exact scores, prompts, resume, run-folder checks."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from medm3.errors import InputError
from medm3.eval.runner import PREDICTIONS, RUN_CONFIG, RUN_LOG, run_eval
from medm3.vlm.base import ImagePart, Message, TextPart
from medm3.vlm.mock import MockBackend
from tests.eval import fixtures

LETTER = "Answer with the option's letter from the given choices directly."


def by_question(answers: dict[str, str], default: str = "no") -> Callable[[list[Message]], str]:
    """A mock script answering from a substring of the last user text."""

    def script(messages: list[Message]) -> str:
        text = messages[-1].plain_text
        return next((a for key, a in answers.items() if key in text), default)

    return script


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (path / PREDICTIONS).read_text().splitlines()]


def test_vqa_rad_vila_m3_end_to_end(tmp_path: Path) -> None:
    data = fixtures.llava_vqa(tmp_path / "data")
    vlm = MockBackend(script=by_question({"fracture": " Yes ", "heart": "no.", "free air": "YES"}))
    run = run_eval("vqa-rad", vlm, data, tmp_path / "run", batch_size=2)
    # r1 ' Yes ' right, r2 'no.' wrong (exact match), r6 'YES' right
    assert run.metrics["accuracy"] == pytest.approx(100 * 2 / 3)
    assert (run.protocol, run.n_samples, run.n_generated) == ("vila-m3", 3, 3)
    first = vlm.calls[0][0]
    assert first.role == "user" and isinstance(first.content[0], ImagePart)
    assert isinstance(first.content[1], TextPart)
    assert first.content[1].text == f"Is there a fracture?\n{LETTER}"
    config = vlm.requests[0].config
    assert (config.temperature, config.max_new_tokens, config.min_new_tokens) == (0.0, 1024, 0)
    assert [r.method for r in vlm.requests] == ["generate_batch"] * 3
    log = json.loads((tmp_path / "run" / RUN_LOG).read_text())
    assert log["protocol"] == "vila-m3" and log["primary_metric"] == "accuracy"
    assert [s["correct"] for s in log["samples"]] == [True, False, True]
    assert log["samples"][1] == {
        "id": "r2",
        "question": "<image>\nIs the heart enlarged?",
        "reference": "no",
        "prediction": "no.",
        "correct": False,
    }
    assert set(log["versions"]) >= {"medm3", "torch", "transformers", "python"}
    assert log["timings"]["samples_generated"] == 3


def test_llava_med_protocol_prompts_and_seeds(tmp_path: Path) -> None:
    data = fixtures.llava_vqa(tmp_path / "data")
    script = by_question({"fracture": "Yes, there is.", "lobe": "the left lobe", "lesions": "two"})
    vlm = MockBackend(script=script)
    run = run_eval(
        "vqa-rad", vlm, data, tmp_path / "run", protocol="llava-med", batch_size=2, seed=7
    )
    m = run.metrics
    assert m["closed"] == pytest.approx(100 * 2 / 3)  # 'no' (default) right for r2, wrong r6
    assert m["open_recall"] == pytest.approx(100 * (2 / 3 + 1) / 2)
    assert vlm.calls[0][0].content[1].text == "Is there a fracture?"  # no instruction
    seeds = [r.config.seed for r in vlm.requests]
    assert seeds == [7, 7, 9, 9, 11]  # seed + index of the batch's first sample
    assert vlm.requests[0].config.temperature == 0.7


def test_slake_official_and_pathvqa_parquet(tmp_path: Path) -> None:
    fixtures.official_slake(tmp_path / "slake")
    vlm = MockBackend(script=by_question({"fracture": "yes", "lobe": "left upper lobe"}))
    run = run_eval("slake", vlm, tmp_path / "slake", tmp_path / "r1")
    assert run.metrics["accuracy"] == pytest.approx(100.0)  # r2 default 'no' is right too
    fixtures.pathvqa_parquet(tmp_path / "path")
    vlm = MockBackend(script=by_question({"benign": "yes"}, default="yes"))
    run = run_eval("pathvqa", vlm, tmp_path / "path", tmp_path / "r2")
    assert run.n_samples == 2 and run.metrics["accuracy"] == pytest.approx(50.0)


def _cls_script(messages: list[Message]) -> str:
    text = messages[-1].plain_text
    return "Answer: Yes." if "cardiomegaly" in text or "pneumothorax" in text else "No"


def test_chexpert_without_expert(tmp_path: Path) -> None:
    fixtures.chexlocalize(tmp_path / "chx")
    vlm = MockBackend(script=_cls_script)
    run = run_eval("chexpert-cls", vlm, tmp_path / "chx", tmp_path / "run", batch_size=4)
    m = run.metrics
    # cardiomegaly truths [0, 1, 1], always 'yes' -> F1 = 2*2 / (2*2 + 1) = 0.8; others 0
    assert m["f1/cardiomegaly"] == pytest.approx(80.0)
    assert m["f1/edema"] == 0.0
    assert m["f1_macro"] == pytest.approx(80.0 / 5)
    assert vlm.calls[0][0].content[1].text == (
        "The following is a question about findings in chest X-ray in the frontal view. "
        "Please reply with yes or no.\n"
        "Question: is there atelectasis according to the provided X-ray image?\n"
    )


class FakeCXR:
    """Stands in for the CXR expert: fixed probabilities, records its calls."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict_batch(
        self, images: list[Any], *, ensemble: str = "calibrated"
    ) -> list[dict[str, float]]:
        assert ensemble == "reference"
        assert all(img.modality == "XR" for img in images)
        self.calls.append(len(images))
        return [{"Atelectasis": 0.9, "Effusion": 0.5, "Pleural_Thickening": 0.51} for _ in images]


def test_chexpert_with_expert_lines(tmp_path: Path) -> None:
    fixtures.chexlocalize(tmp_path / "chx")
    vlm = MockBackend(script=lambda m: "yes")
    expert = FakeCXR()
    run = run_eval(
        "chexpert-cls",
        vlm,
        tmp_path / "chx",
        tmp_path / "run",
        experts=True,
        batch_size=4,
        expert=expert,
    )
    assert run.experts and sum(expert.calls) == 3  # once per image, across batch boundaries
    text = vlm.calls[0][0].content[1].text
    assert text == (
        "The following is a question about findings in chest X-ray in the frontal view. "
        "When answering the question, please analyze the image and incorporate the additional "
        "results generated by an expert classification model:\n"
        " atelectasis: yes\n effusion: no\n pleural thickening: yes\n"  # 0.5 is not > 0.5
        "Question: is there atelectasis according to the provided X-ray image?\n"
        "Please reply with yes or no.\n"
    )
    assert lines(tmp_path / "run")[0]["expert"]["Effusion"] == 0.5
    with pytest.raises(InputError, match="no expert variant"):
        run_eval("vqa-rad", vlm, tmp_path / "chx", tmp_path / "x", experts=True)


def test_cxr14(tmp_path: Path) -> None:
    fixtures.cxr14_labels(tmp_path / "c")
    run = run_eval("cxr14-cls", MockBackend(script=_cls_script), tmp_path / "c", tmp_path / "run")
    # pneumothorax truths [0, 1, 0, 0], always yes: F1 = 2 / (2 + 3) = 0.4
    assert run.metrics["f1/pneumothorax"] == pytest.approx(40.0)
    assert run.metrics["f1_macro"] == pytest.approx(40.0 / 3)


def test_kill_and_resume(tmp_path: Path) -> None:
    data = fixtures.llava_vqa(tmp_path / "data")
    answers = {"fracture": "yes", "heart": "yes", "lobe": "left lobe", "lesions": "2", "air": "no"}
    reference = run_eval(
        "vqa-rad",
        MockBackend(script=by_question(answers)),
        data,
        tmp_path / "ref",
        protocol="llava-med",
        batch_size=2,
    )
    calls = {"n": 0}

    def dies_after_three(messages: list[Message]) -> str:
        calls["n"] += 1
        if calls["n"] > 3:
            raise RuntimeError("killed")
        return by_question(answers)(messages)

    with pytest.raises(RuntimeError, match="killed"):
        run_eval(
            "vqa-rad",
            MockBackend(script=dies_after_three),
            data,
            tmp_path / "run",
            protocol="llava-med",
            batch_size=2,
        )
    assert [r["question_id"] for r in lines(tmp_path / "run")] == ["r1", "r2"]  # whole batch only
    assert not (tmp_path / "run" / RUN_LOG).exists()
    second = MockBackend(script=by_question(answers))
    resumed = run_eval(
        "vqa-rad", second, data, tmp_path / "run", protocol="llava-med", batch_size=2
    )
    assert len(second.calls) == 3 and resumed.n_generated == 3
    ids = [r["question_id"] for r in lines(tmp_path / "run")]
    assert ids == ["r1", "r2", "r3", "r5", "r6"]
    assert resumed.metrics == reference.metrics
    log = json.loads((tmp_path / "run" / RUN_LOG).read_text())
    assert log["timings"]["samples_resumed"] == 2
    # a third run generates nothing and scores the same
    third = run_eval(
        "vqa-rad",
        MockBackend(script=[]),
        data,
        tmp_path / "run",
        protocol="llava-med",
        batch_size=2,
    )
    assert third.n_generated == 0 and third.metrics == reference.metrics


def test_torn_last_line_is_redone(tmp_path: Path) -> None:
    data = fixtures.llava_vqa(tmp_path / "data")
    vlm = MockBackend(script=by_question({"fracture": "yes"}))
    run_eval("vqa-rad", vlm, data, tmp_path / "run", limit=2)
    with (tmp_path / "run" / PREDICTIONS).open("a") as f:
        f.write('{"question_id": "r6", "te')  # killed in the middle of a write
    more = MockBackend(script=by_question({"air": "yes"}))
    run = run_eval("vqa-rad", more, data, tmp_path / "run")  # no --limit now: extends the run
    assert [r["question_id"] for r in lines(tmp_path / "run")] == ["r1", "r2", "r6"]
    assert run.n_generated == 1 and run.metrics["accuracy"] == 100.0


def test_run_folder_checks_write_nothing(tmp_path: Path) -> None:
    data = fixtures.llava_vqa(tmp_path / "data")
    run_eval("vqa-rad", MockBackend(script=lambda m: "yes"), data, tmp_path / "run")
    before = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert before == [PREDICTIONS, RUN_LOG, RUN_CONFIG]
    with pytest.raises(InputError, match="another protocol"):
        run_eval("vqa-rad", MockBackend(), data, tmp_path / "run", protocol="llava-med")
    with pytest.raises(InputError, match="another model"):
        run_eval("vqa-rad", MockBackend("other"), data, tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="not an m3 eval run folder"):
        run_eval("vqa-rad", MockBackend(), data, other)
    for kwargs, message in (
        ({"limit": 0}, "--limit"),
        ({"batch_size": 0}, "--batch-size"),
        ({"protocol": "lmms"}, "unknown protocol"),
    ):
        with pytest.raises(InputError, match=message):
            run_eval("vqa-rad", MockBackend(), data, tmp_path / "new", **kwargs)
    with pytest.raises(InputError, match="has no 'llava-med' protocol"):
        run_eval("cxr14-cls", MockBackend(), data, tmp_path / "new", protocol="llava-med")
    with pytest.raises(InputError, match=r"unknown eval task 'vqarad'\. Did you mean 'vqa-rad'"):
        run_eval("vqarad", MockBackend(), data, tmp_path / "new")
    assert not (tmp_path / "new").exists()


def test_backend_answer_count_mismatch(tmp_path: Path) -> None:
    from medm3.errors import MedM3Error

    class Short(MockBackend):
        def generate_batch(self, conversations, config=None):  # type: ignore[no-untyped-def]
            return super().generate_batch(conversations, config)[:-1]

    data = fixtures.llava_vqa(tmp_path / "data")
    with pytest.raises(MedM3Error, match="returned 1 answers for 2"):
        run_eval("vqa-rad", Short(script=lambda m: "yes"), data, tmp_path / "run", batch_size=2)
