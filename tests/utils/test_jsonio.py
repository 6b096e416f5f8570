"""The shared JSON reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from medm3.errors import InputError
from medm3.utils.jsonio import read_json


def test_read_json(tmp_path: Path) -> None:
    good = tmp_path / "a.json"
    good.write_text('{"x": [1, 2]}', encoding="utf-8")
    assert read_json(good, expect=dict) == {"x": [1, 2]}
    with pytest.raises(InputError, match="expected a JSON list in the run log") as info:
        read_json(good, expect=list, what="the run log")
    assert str(good) in str(info.value)
    bad = tmp_path / "b.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match=r"cannot read JSON: Expecting property name.*line 1"):
        read_json(bad)
    latin = tmp_path / "c.json"
    latin.write_bytes(b'{"name": "M\xfcller"}')
    with pytest.raises(InputError, match="cannot read JSON: 'utf-8' codec"):
        read_json(latin)
    with pytest.raises(InputError, match="cannot read JSON: No such file") as info:
        read_json(tmp_path / "missing.json")
    assert "missing.json" in str(info.value) and "\n" not in str(info.value)
