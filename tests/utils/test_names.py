"""The one name normaliser (medm3.utils.names)."""

from __future__ import annotations

import pytest

from medm3.utils.names import name_key, normalize_name, strip_arg


@pytest.mark.parametrize(
    "text",
    ["hepatic tumor", "'Hepatic_Tumor'", ' "hepatic-tumor" ', "HEPATIC   tumor", "hepatic__tumor"],
)
def test_spellings_of_one_name_agree(text: str) -> None:
    assert normalize_name(text) == "hepatic tumor"


def test_order_free_key_and_plain_strip() -> None:
    assert name_key("right kidney") == name_key("Kidney_Right") == "kidney right"
    assert name_key("left kidney") != name_key("right kidney")
    assert strip_arg(" 'Liver, Spleen' ") == "Liver, Spleen" and strip_arg(None) == ""
    assert normalize_name(None) == "" and normalize_name("''") == ""
