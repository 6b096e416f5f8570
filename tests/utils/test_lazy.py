"""medm3.utils.lazy: package attributes resolved on first use."""

from __future__ import annotations

import subprocess
import sys

import pytest

from medm3.utils.lazy import lazy_getattr


def test_lazy_getattr_imports_the_home_module_and_refuses_other_names() -> None:
    getter = lazy_getattr("pkg", {"dumps": "json", "sqrt": "math"})
    import json
    import math

    assert getter("dumps") is json.dumps
    assert getter("sqrt") is math.sqrt
    with pytest.raises(AttributeError, match="module 'pkg' has no attribute 'loads'"):
        getter("loads")


def test_packages_resolve_their_public_names_without_importing_torch() -> None:
    code = (
        "import sys, medm3, medm3.data, medm3.eval, medm3.train, medm3.testing\n"
        "assert medm3.InputError.__name__ == 'InputError'\n"
        "assert callable(medm3.data.build_dataset) and callable(medm3.eval.run_eval)\n"
        "assert medm3.train.Config.__name__ == 'Config'\n"
        "assert 'torch' not in sys.modules, 'a lazy attribute imported torch'\n"
        "assert callable(medm3.testing.build_tiny_vila)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
