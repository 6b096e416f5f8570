"""`m3 experts run`: built-in label tables and detection for masks; probabilities shown."""

from __future__ import annotations

import json
from typing import Any

import pytest

from medm3.experts.base import Expert, ExpertResult, RunContext
from tests.cli.helpers import assert_one_line_error, run
from tests.conftest import shared_ct as sample_ct
from tests.conftest import shared_ct_labels as sample_ct_labels


def _measure(extra: list[str], capsys) -> dict[str, Any]:
    args = ["experts", "run", "measure", str(sample_ct()), "--mask", str(sample_ct_labels())]
    code, out, err = run([*args, *extra, "--json"], capsys)
    assert code == 0, err
    return json.loads(out)


def test_measure_with_a_builtin_table_and_with_detection(capsys) -> None:
    named = _measure(["--labels", "totalseg-ct", "--arg", "right kidney"], capsys)
    assert [r["name"] for r in named["measurements"]] == ["kidney_right"]
    detected = _measure(["--arg", "liver"], capsys)  # names from the file's own header
    (row,) = detected["measurements"]
    assert (row["name"], row["label"]) == ("liver", 5)
    vista = _measure(["--labels", "vista3d", "--arg", "liver"], capsys)
    assert vista["measurements"][0]["label"] == 1  # VISTA3D's liver id: a different structure


def test_labels_without_mask_is_refused(capsys) -> None:
    code, _, err = run(
        ["experts", "run", "measure", str(sample_ct()), "--labels", "vista3d"], capsys
    )
    assert_one_line_error(code, err, "--labels names the labels of --mask")


class ProbExpert(Expert):
    """Test double: a classifier with fixed probabilities."""

    name = "probs"
    trigger = "PROBS"
    card_modality = "CT"
    modalities = ("CT",)
    task = "classification"
    overview = "test double"
    accuracy = "n/a"
    valid_args = ("",)
    weights_name = None

    def _setup(self) -> None:
        pass

    def _run(self, inputs: dict, args: str, context: RunContext) -> ExpertResult:
        probabilities = {"Effusion": 0.734, "Mass": 0.12}
        findings = {k: v >= 0.5 for k, v in probabilities.items()}
        return ExpertResult(
            expert=self.name,
            args=args,
            text="The resulting predictions are: Effusion: yes, Mass: no.",
            probabilities=probabilities,
            findings=findings,
        )


@pytest.fixture
def prob_expert():
    from medm3.experts import registry

    registry.EXPERTS.register(ProbExpert.name, ProbExpert, overwrite=True)
    yield
    registry.EXPERTS._loaded.pop(ProbExpert.name, None)
    registry.EXPERTS._targets.pop(ProbExpert.name, None)
    registry._instances.clear()


def test_classification_text_shows_probabilities(prob_expert, capsys) -> None:
    code, out, err = run(["experts", "run", "probs", str(sample_ct()), "--no-cache"], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "The resulting predictions are: Effusion: yes, Mass: no."
    assert lines[2:4] == ["  Effusion: yes (p = 0.73)", "  Mass: no (p = 0.12)"]
