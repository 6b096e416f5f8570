"""Eval tasks are made of registered components; unknown kinds are refused."""

from __future__ import annotations

import pytest

from medm3.errors import InputError
from medm3.eval.tasks import KINDS, TASKS, Task, TaskKind, get_task, register_kind


def test_built_in_tasks_are_registrations_of_built_in_kinds() -> None:
    assert {"vqa", "report", "classification"} <= set(KINDS)
    kinds = {name: get_task(name).kind for name in TASKS.names()}
    assert kinds["vqa-rad"] == "vqa" and kinds["mimic-cxr-report"] == "report"
    assert kinds["chexpert-cls"] == "classification"
    headline = {n: get_task(n).primary_metric(get_task(n).protocols[0]) for n in kinds}
    assert headline["slake"] == "accuracy" and headline["cxr14-cls"] == "f1_macro"
    assert get_task("pathvqa").primary_metric("llava-med") == "closed"
    assert headline["mimic-cxr-report"] == "bleu_4"
    assert [get_task(n).supports_experts for n in ("vqa-rad", "chexpert-cls")] == [False, True]


@pytest.mark.parametrize("kind", ["segmentation", "VQA", ""])
def test_unknown_kind_is_refused_when_the_task_is_made(kind: str) -> None:
    with pytest.raises(InputError, match=f"task 'seg' has unknown kind '{kind}'"):
        Task("seg", kind, "ct", "CT segmentation")


def test_unknown_protocol_is_refused() -> None:
    with pytest.raises(InputError, match=r"unknown protocol\(s\) \['radgraph'\]"):
        Task("x", "vqa", "vqa-rad", "X", protocols=("radgraph",))


def test_a_kind_cannot_be_registered_twice() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_kind(KINDS["vqa"])
    spare = TaskKind(
        "spare-kind",
        loader=KINDS["vqa"].loader,
        prompt=lambda task, sample, protocol, lines: "?",
        scorer=KINDS["vqa"].scorer,
        headline=lambda protocol: "accuracy",
        generation=KINDS["vqa"].generation,
    )
    try:
        register_kind(spare)
        assert Task("t", "spare-kind", "vqa-rad", "T").prompt_text(None, "vila-m3") == "?"  # type: ignore[arg-type]
    finally:
        KINDS.pop("spare-kind", None)
