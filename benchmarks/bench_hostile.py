"""Benchmark: the hostile-input corpora (server and CLI): cases, failures, max RSS growth, max time.

Not a test: it prints figures (the pass/fail rules are the tests' own, see
``tests/hostile``). The server corpus runs against two real ``m3 serve
--backend mock`` subprocesses, the CLI corpus against ``m3`` subprocesses.

The CLI corpus (``tests/hostile/cli_cases.py``) is used through ``CASES`` and
``run_case(case, workdir)`` when that module offers them (a result with
``problems``/``ok``, ``rss_growth_mb``/``peak_rss_mb`` and ``seconds``, as an
object or a dict); otherwise its pytest module is run and only counts and the
wall time are reported. A missing CLI corpus is reported, not an error. Usage::

    python benchmarks/bench_hostile.py [--only server|cli] [--slowest 5]
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _row(name: str, cases: int, failures: int, rss: float | None, slowest: float | None) -> str:
    rss_text = f"{rss:8.1f}" if rss is not None else "     n/a"
    time_text = f"{slowest:8.2f}" if slowest is not None else "     n/a"
    return f"{name:<14}{cases:>7}{failures:>10}{rss_text:>16}{time_text:>13}"


def run_server(slowest: int) -> tuple[int, int, float, float]:
    """Run the server corpus; prints failures and the slowest cases."""
    from tests.hostile.server_cases import CASES
    from tests.hostile.server_harness import problems, servers

    failures: list[tuple[str, list[str]]] = []
    timings: list[tuple[float, float, str]] = []
    groups: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp, servers(Path(tmp)) as srv:
        for case in CASES:
            harness = srv[case.server]
            result = harness.run(case)
            found = problems(result, harness.data)
            group = groups[case.name.split("/")[0]]
            group[0] += 1
            if found:
                group[1] += 1
                failures.append((case.name, found))
            timings.append((result.seconds, result.rss_growth_mb, case.name))
    print("server corpus by group (cases / failures):")
    print("  " + ", ".join(f"{g} {n}/{f}" for g, (n, f) in sorted(groups.items())))
    for name, found in failures:
        print(f"  FAIL {name}: {found[0][:200]}")
    print(f"slowest {slowest} server cases (s, RSS growth MB):")
    for seconds, rss, name in sorted(timings, reverse=True)[:slowest]:
        print(f"  {seconds:7.2f} {rss:7.1f}  {name}")
    biggest = max(timings, key=lambda t: t[1])
    print(f"largest RSS growth: {biggest[1]:.1f} MB ({biggest[2]})")
    return (
        len(CASES),
        len(failures),
        max(t[1] for t in timings),
        max(t[0] for t in timings),
    )


def run_cli() -> tuple[int, int, float | None, float | None] | None:
    """Run the CLI corpus if it exists (see the module docstring); None when it does not."""
    try:
        from tests.hostile import cli_cases
    except ImportError as exc:
        print(f"CLI corpus: not available in this checkout ({exc})")
        return None
    cases = list(getattr(cli_cases, "CASES", []))
    if cases and callable(getattr(cli_cases, "run_case", None)):
        failures, rss, seconds = 0, [], []
        with tempfile.TemporaryDirectory(prefix="bench-hostile-cli-") as tmp:
            inputs, work = Path(tmp) / "inputs", Path(tmp) / "work"
            inputs.mkdir()
            work.mkdir()
            cli_cases.warm_up()
            base = cli_cases.baseline_mb(inputs, work)
            for case in cases:
                outcome = cli_cases.run_case(case, inputs, work)
                found = cli_cases.problems(case, outcome, base)
                if found:
                    failures += 1
                    print(f"  FAIL {case.name}: {'; '.join(found)}")
                sub = getattr(case, "subprocess", False)
                rss.append(outcome.peak_mb - (base[0] if sub else base[1]))
                seconds.append(outcome.seconds)
        print(f"CLI baseline peak: {base[0]:.0f} MB subprocess, {base[1]:.0f} MB in-process")
        return len(cases), failures, max(rss) if rss else None, max(seconds)
    test = ROOT / "tests" / "hostile" / "test_cli_corpus.py"
    if not test.exists():
        print("CLI corpus: cli_cases.py has no CASES/run_case and there is no test_cli_corpus.py")
        return None
    print("CLI corpus: no run_case() in cli_cases.py; running its pytest module (counts only)")
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", str(test)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])},
    )
    wall = time.perf_counter() - start
    counts = collections.Counter()
    for word, key in (("passed", "passed"), ("failed", "failed"), ("error", "errors")):
        for line in out.stdout.splitlines()[-3:]:
            for part in line.replace(",", " ").split(" in ")[0].split("  "):
                bits = part.strip().split()
                if len(bits) == 2 and bits[1].startswith(word) and bits[0].isdigit():
                    counts[key] += int(bits[0])
    total = sum(counts.values())
    print(f"CLI corpus pytest: {dict(counts)} in {wall:.1f} s")
    return total, counts["failed"] + counts["errors"], None, None


def main() -> None:
    """Run the corpora and print the figures side by side."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("server", "cli"), default=None)
    ap.add_argument("--slowest", type=int, default=5, help="slowest server cases to list")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MEDM3_NO_PROGRESS", "1")
    rows = []
    started = time.perf_counter()
    if args.only in (None, "server"):
        rows.append(("server", *run_server(args.slowest)))
    if args.only in (None, "cli"):
        cli = run_cli()
        if cli is not None:
            rows.append(("cli", *cli))
    print()
    print(f"{'corpus':<14}{'cases':>7}{'failures':>10}{'max RSS MB':>16}{'max time s':>13}")
    for row in rows:
        print(_row(*row))
    if rows:
        cases = sum(r[1] for r in rows)
        fails = sum(r[2] for r in rows)
        rss = [r[3] for r in rows if r[3] is not None]
        times = [r[4] for r in rows if r[4] is not None]
        print(_row("total", cases, fails, max(rss) if rss else None, max(times) if times else None))
    print(f"(wall time {time.perf_counter() - started:.1f} s; RSS = server growth per request)")


if __name__ == "__main__":
    main()
