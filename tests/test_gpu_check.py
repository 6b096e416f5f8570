"""benchmarks/gpu_check.sh in its CPU-only dry mode (no GPU in CI).

The full dry run (every step, full-size VISTA3D network on CPU) takes minutes
on 2 cores, so it is marked ``slow``; the default suite runs the quick steps
through the same shell entry point, so the script itself is always exercised.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"


def _run(*args: str, timeout: int) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable, "MEDM3_GPU_CHECK_DRY": "1"}
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def _table(stdout: str) -> dict[str, str]:
    rows = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] in ("ok", "FAIL") and not line.startswith("  "):
            rows[parts[0]] = parts[1]
    return rows


def test_dry_quick_steps_pass_and_print_the_table() -> None:
    done = _run("--only", "vila_batched", "serve_batched", "pytest_gpu", timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _table(done.stdout) == {"vila_batched": "ok", "serve_batched": "ok", "pytest_gpu": "ok"}
    assert "dry=True" in done.stdout and "3 ok, 0 failed" in done.stdout
    # The gpu-marked tests were collected and run (they skip here: no CUDA device).
    assert "pytest -m gpu: " in done.stdout and "skipped" in done.stdout


def test_a_failing_step_is_reported_and_fails_the_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import gpu_check

    def broken(ctx: object) -> str:
        raise RuntimeError("CUDA error: an illegal memory access")

    steps = [("fine", lambda ctx: "all good"), ("broken", broken), ("after", lambda ctx: "ran")]
    monkeypatch.setattr(gpu_check, "STEPS", steps)
    assert gpu_check.main(["--dry"]) == 1
    out = capsys.readouterr().out
    assert _table(out) == {"fine": "ok", "broken": "FAIL", "after": "ok"}
    assert "RuntimeError: CUDA error: an illegal memory access" in out
    assert "2 ok, 1 failed: broken" in out


@pytest.mark.slow
def test_dry_run_of_every_step() -> None:
    done = _run(timeout=3600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = _table(done.stdout)
    assert len(rows) == 9 and set(rows.values()) == {"ok"}, done.stdout
