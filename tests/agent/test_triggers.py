"""The strict trigger parser."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from medm3.agent.triggers import parse_trigger


def test_plain_answer_has_no_trigger():
    parsed = parse_trigger("The liver looks normal.")
    assert parsed.trigger is None and parsed.error is None


def test_valid_trigger_normalised():
    parsed = parse_trigger(
        "This looks like a CT image. Let me trigger <VISTA3D( Hepatic Tumor )>. "
    )
    assert parsed.error is None and parsed.trigger is not None
    assert parsed.trigger.expert == "vista3d" and parsed.trigger.args == "hepatic tumor"
    assert parsed.trigger.text == "<VISTA3D( Hepatic Tumor )>"


def test_empty_args_default_and_no_arg_experts():
    assert parse_trigger("<VISTA3D()>").trigger.args == "everything"
    assert parse_trigger("Let me first trigger <CXR()>.").trigger.expert == "cxr"
    assert parse_trigger("<BRATS()>").trigger.args == ""


def test_bad_argument_is_an_error_not_a_call():
    parsed = parse_trigger("<VISTA3D(purple elephant)>")
    assert parsed.trigger is None and "purple elephant" in parsed.error
    parsed = parse_trigger("<CXR(left lung)>")
    assert parsed.trigger is None and "takes no arguments" in parsed.error


def test_unknown_expert_lists_the_available_ones():
    parsed = parse_trigger("<SEGMENTALL(everything)>")
    assert parsed.trigger is None
    assert "no expert named SEGMENTALL" in parsed.error and "<VISTA3D(args)>" in parsed.error


def test_malformed_and_multiple_calls():
    assert "malformed" in parse_trigger("Let me trigger <VISTA3D(liver>").error
    parsed = parse_trigger("<VISTA3D(liver)> and <CXR()>")
    assert parsed.trigger is None and "one expert at a time" in parsed.error
    # The same call written twice is one call.
    assert parse_trigger("<CXR()> ... <CXR()>").trigger.expert == "cxr"


def test_syntax_placeholder_and_result_markers_are_not_calls():
    text = "Give the model <NAME(args)> when selecting. The results are <segmentation>."
    parsed = parse_trigger(text)
    assert parsed.trigger is None and parsed.error is None


def test_offered_subset_restricts_calls():
    parsed = parse_trigger("<CXR()>", experts=["vista3d"])
    assert parsed.trigger is None and "no expert named CXR" in parsed.error


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300))
def test_fuzz_never_raises(text):
    parsed = parse_trigger(text)
    assert parsed.trigger is None or parsed.error is None


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["VISTA3D", "CXR", "BRATS", "MEASURE", "vista3d", "X", "NAME"]),
    st.text(alphabet="abcdefghijklmnop ,'\"()<>_-", max_size=40),
    st.text(max_size=40),
)
def test_fuzz_trigger_like_strings(name, args, tail):
    parsed = parse_trigger(f"Let me trigger <{name}({args})>{tail}")
    if parsed.trigger is not None:
        assert parsed.error is None and parsed.trigger.text.startswith("<")
