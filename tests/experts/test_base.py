"""The expert protocol: model cards, tool schema, argument parsing, input checks, run."""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest

from medm3.errors import InputError
from medm3.experts.base import Expert, ExpertError, ExpertResult, RunContext
from tests.doubles import FakeSegExpert, PairExpert, volume, xray

REFERENCE_VISTA3D_CARD = (
    "<VISTA3D(args)> Modality: CT, Task: segmentation, Overview: domain-specialized "
    "interactive foundation model developed for segmenting and annotating human anatomies "
    "with precision, Accuracy: 127 organs: 0.792 Dice on average, Valid args are: "
    "'everything', 'hepatic tumor', 'pancreatic tumor', 'lung tumor', 'bone lesion', "
    "'organs', 'cardiovascular', 'gastrointestinal', 'skeleton', or 'muscles'"
)


class CardDouble(FakeSegExpert):
    """Carries the reference VISTA3D card attributes."""

    name = "carddouble"
    trigger = "VISTA3D"
    card_modality = "CT"
    task = "segmentation"
    overview = (
        "domain-specialized interactive foundation model developed for segmenting and "
        "annotating human anatomies with precision"
    )
    accuracy = "127 organs: 0.792 Dice on average"
    valid_args: ClassVar[tuple[str, ...]] = (
        "everything",
        "hepatic tumor",
        "pancreatic tumor",
        "lung tumor",
        "bone lesion",
        "organs",
        "cardiovascular",
        "gastrointestinal",
        "skeleton",
        "muscles",
    )


class OpenArgs(FakeSegExpert):
    name = "openfake"
    open_args = True


def test_model_card_reference_format() -> None:
    assert CardDouble.model_card() == REFERENCE_VISTA3D_CARD


def test_model_card_without_args() -> None:
    assert PairExpert.model_card() == (
        "<PAIRFAKE(args)> Modality: MRI, Task: segmentation, Overview: a two-input test double, "
        "Accuracy: not applicable, Valid args are: None"
    )


def test_tool_schema_shapes() -> None:
    closed = FakeSegExpert.tool_schema()
    assert closed["type"] == "function"
    fn = closed["function"]
    assert fn["name"] == "FAKESEG"
    assert "Modality: CT" in fn["description"] and "Task: segmentation" in fn["description"]
    params = fn["parameters"]
    assert params["type"] == "object" and params["required"] == []
    assert params["properties"]["args"]["enum"] == ["everything", "bright", "dark"]

    opened = OpenArgs.tool_schema()["function"]["parameters"]["properties"]["args"]
    assert "enum" not in opened and "everything, bright, dark" in opened["description"]

    assert PairExpert.tool_schema()["function"]["parameters"]["properties"] == {}
    json.dumps([closed, OpenArgs.tool_schema(), PairExpert.tool_schema()])


def test_describe_is_json() -> None:
    facts = FakeSegExpert.describe()
    assert facts["name"] == "fakeseg" and facts["inputs"] == ["image"]
    assert facts["model_card"] == FakeSegExpert.model_card()
    json.dumps(facts)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("bright", "bright"),
        ("  'BRIGHT' ", "bright"),
        ('"Dark"', "dark"),
        ("", "everything"),
        (None, "everything"),
        ("none", "everything"),
        ("args", "everything"),
    ],
)
def test_parse_args_valid(given: str | None, expected: str) -> None:
    assert FakeSegExpert().parse_args(given) == expected


def test_parse_args_invalid_lists_valid_ones() -> None:
    with pytest.raises(ExpertError, match=r"'liver' is not a valid argument for FAKESEG.*"):
        FakeSegExpert().parse_args("liver")
    with pytest.raises(ExpertError) as info:
        FakeSegExpert().parse_args("liver")
    assert "'everything', 'bright', or 'dark'" in str(info.value)


def test_parse_args_no_args_expert() -> None:
    expert = PairExpert()
    assert expert.parse_args("") == "" and expert.parse_args("None") == ""
    with pytest.raises(ExpertError, match="takes no arguments"):
        expert.parse_args("x")


def test_parse_args_open_args_empty() -> None:
    assert OpenArgs().parse_args("") == ""
    assert OpenArgs().parse_args("Bright") == "bright"


def test_check_inputs_forms() -> None:
    expert = FakeSegExpert()
    ct = volume()
    assert expert.check_inputs(ct) == {"image": ct}
    assert expert.check_inputs([ct]) == {"image": ct}
    assert expert.check_inputs({"IMAGE": ct}) == {"image": ct}
    with pytest.raises(ExpertError, match="takes one image, got 2"):
        expert.check_inputs([ct, ct])
    with pytest.raises(ExpertError, match="has no input named t1"):
        expert.check_inputs({"t1": ct})


def test_check_inputs_named_multi_input() -> None:
    expert = PairExpert()
    t1, t2 = volume(modality="MR"), volume(modality="MR", seed=1)
    assert expert.check_inputs({"t1": t1, "T2": t2}) == {"t1": t1, "t2": t2}
    with pytest.raises(ExpertError, match=r"needs its inputs named \(t1, t2\)"):
        expert.check_inputs([t1, t2])
    with pytest.raises(ExpertError, match="needs the input\\(s\\): t2"):
        expert.check_inputs({"t1": t1})


def test_check_inputs_wrong_modality() -> None:
    with pytest.raises(ExpertError) as info:
        FakeSegExpert().check_inputs(xray())
    message = str(info.value)
    assert "FAKESEG works on CT images" in message and "XR (inferred)" in message
    assert isinstance(info.value, InputError)  # the CLI shows it as one line
    with pytest.raises(ExpertError, match=r"is MR \(given\)"):
        FakeSegExpert().check_inputs(volume(modality="MR"))


def test_run_fills_timings_and_sets_up_once() -> None:
    expert = FakeSegExpert()
    first = expert.run(volume(), "bright", use_cache=False)
    second = expert.run(volume(), "dark", use_cache=False)
    assert expert.setup_calls == 1 and expert.run_calls == 2 and expert.ready
    for result in (first, second):
        assert {"setup", "run", "total"} <= set(result.timings)
        assert result.timings["total"] >= result.timings["run"]
        assert result.info["cache"] == "off"
    assert first.args == "bright" and first.label_names == {1: "bright"}


def test_run_rejects_before_setup() -> None:
    expert = FakeSegExpert()
    with pytest.raises(ExpertError):
        expert.run(volume(), "nonsense", use_cache=False)
    with pytest.raises(ExpertError):
        expert.run(xray(), "bright", use_cache=False)
    assert expert.setup_calls == 0


def test_result_to_dict_and_trigger(registered_fakes: Any) -> None:
    result = FakeSegExpert().run(volume(), "dark", use_cache=False)
    doc = result.to_dict()
    assert doc["expert"] == "fakeseg" and doc["label_names"] == {"2": "dark"}
    assert doc["overlays"][0]["name"] == "fakeseg_axial_0"
    assert result.trigger_text == "<FAKESEG(dark)>"
    from medm3.experts.output import json_default

    json.loads(json.dumps(doc, default=json_default))


def test_default_cache_context() -> None:
    context = RunContext(plane="coronal", slice_index=3, options={"points": [[1, 2, 3]]})
    assert FakeSegExpert().cache_context({}, context) == {
        "plane": "coronal",
        "slice_index": 3,
        "options": {"points": [[1, 2, 3]]},
    }
    assert Expert.weights_id(FakeSegExpert()) == "none"
    assert FakeSegExpert().derive_from_cache(lambda a: None, {}, "dark") is None


def test_expert_result_defaults() -> None:
    result = ExpertResult(expert="x", args="", text="t")
    assert result.overlays == [] and result.label_map is None and result.info == {}


def test_every_argument_parser_uses_the_one_name_normaliser() -> None:
    from medm3.experts.measure import MeasureExpert
    from medm3.experts.vista3d import Vista3DExpert
    from medm3.utils.names import normalize_name

    assert FakeSegExpert().parse_args(" 'Bright' ") == "bright"  # the default parser
    assert MeasureExpert().parse_args("'Kidney_Right'; liver") == "kidney right, liver"
    assert Vista3DExpert().parse_args("Hepatic_Tumor") == "hepatic tumor"
    assert Vista3DExpert().parse_args("'left-kidney'") == "left kidney"
    assert normalize_name("Pleural_Thickening") == "pleural thickening"  # the CXR text form
