"""The shared "did you mean"."""

from __future__ import annotations

from medm3.utils.suggest import close_matches, did_you_mean


def test_did_you_mean() -> None:
    names = ["vista3d", "brats", "cxr", "measure"]
    assert did_you_mean("vista3", names) == "Did you mean 'vista3d'?"
    assert did_you_mean("VISTA3", names) == "Did you mean 'vista3d'?"  # case-insensitive
    assert did_you_mean("zzzz", names) == ""
    assert close_matches("Liver", ["liver", "liver tumor", "lung"], n=2) == ["liver", "liver tumor"]
    assert did_you_mean("livr", ["liver", "lives"], n=1) == "Did you mean 'liver'?"
