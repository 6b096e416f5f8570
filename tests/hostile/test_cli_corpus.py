"""Run the CLI hostile-input corpus (tests/hostile/cli_cases.py) against the real `m3`.

Inputs are generated once per session (nothing binary is committed). Most
cases run in-process through the `m3` entry point (peak memory traced with
tracemalloc); bombs run as subprocesses whose peak RSS is read with wait4.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.hostile import cli_cases
from tests.hostile.cli_cases import CASES, CliCase

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="session")
def corpus_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("hostile")
    inputs, work = root / "inputs", root / "work"
    inputs.mkdir()
    work.mkdir()
    for case in CASES:
        for name in case.inputs:
            cli_cases.make_input(name, inputs)
    return inputs, work


@pytest.fixture(scope="session")
def baseline(corpus_dirs: tuple[Path, Path]) -> tuple[float, float]:
    cli_cases.warm_up()
    return cli_cases.baseline_mb(*corpus_dirs)


def test_corpus_size() -> None:
    assert len(CASES) >= 150
    assert len({c.name for c in CASES}) == len(CASES)
    assert sum(c.subprocess for c in CASES) >= 10  # bombs measured in their own process


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(case: CliCase, corpus_dirs: tuple[Path, Path], baseline: tuple[float, float]) -> None:
    outcome = cli_cases.run_case(case, *corpus_dirs)
    found = cli_cases.problems(case, outcome, baseline)
    assert not found, f"{case.name}: {found}\nstderr: {outcome.stderr[-2000:]}"


def test_problems_catches_bad_outcomes(baseline: tuple[float, float]) -> None:
    """The judge itself: a traceback, two lines, a leftover, a memory blow-up all fail."""
    case = CliCase("x", ("info", "a"), 2, "boom", names_input=False)
    good = cli_cases.Outcome(2, "", "m3: error: a: boom\n", 0.0, 0.1)
    assert cli_cases.problems(case, good, baseline) == []
    bad = [
        cli_cases.Outcome(1, "", "m3: error: a: boom\n", 0.0, 0.1),
        cli_cases.Outcome(2, "", "Traceback (most recent call last):\nm3: error: boom\n", 0.0, 0.1),
        cli_cases.Outcome(2, "", "m3: error: a: boom\nmore\n", 0.0, 0.1),
        cli_cases.Outcome(2, "", "m3: error: a: other\n", 0.0, 0.1),
        cli_cases.Outcome(2, "", "m3: error: a: boom\n", 0.0, 0.1, left_behind=["x.tmp"]),
        cli_cases.Outcome(2, "", "m3: error: a: boom\n", 0.0, 0.1, out_files=["half.png"]),
        cli_cases.Outcome(2, "", "m3: error: a: boom\n", 400.0, 0.1),
    ]
    for outcome in bad:
        assert cli_cases.problems(case, outcome, baseline), outcome


def test_data_build_kill9_leaves_no_temporaries(
    corpus_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    """kill -9 during `m3 data build`, a stale temporary, then a resume: none of it shows."""
    from tests.hostile import generators_cli as gen

    inputs, _ = corpus_dirs
    good = cli_cases.make_input("png_ok", inputs).read_bytes()
    root = tmp_path / "src"
    images = root / "VQA_RAD Image Folder"
    images.mkdir(parents=True)
    records = []
    for i in range(300):
        (images / f"img{i}.png").write_bytes(good)
        records.append(
            {
                "qid": i,
                "image_name": f"img{i}.png",
                "question": "Normal?",
                "answer": "yes",
                "answer_type": "CLOSED",
                "phrase_type": "freeform",
            }
        )
    (root / "VQA_RAD Dataset Public.json").write_text(json.dumps(records))
    out = tmp_path / "ds"
    staging = tmp_path / ".ds.partial"
    argv = [sys.executable, "-m", "medm3", "data", "build", "vqa-rad", "--source", str(root)]
    argv += ["-o", str(out), "--shard-size", "50", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (staging / "images").is_dir() and len(list((staging / "images").iterdir())) > 20:
            break
        time.sleep(0.01)
    if proc.poll() is not None:
        pytest.skip("the build finished before it could be killed")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    # What a kill in the middle of an atomic write leaves: a hidden 0-byte temporary.
    (staging / "images" / ".img5.png.k3j9x0ab.png").write_bytes(b"")
    (staging / "images" / ".img6.png.link").write_bytes(b"")
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    files = [p for p in out.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.startswith(".")]
    assert not [p for p in files if p.stat().st_size == 0]
    assert len(list((out / "images").iterdir())) == 300
    assert not staging.exists()
    del gen
