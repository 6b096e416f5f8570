"""The Ray executor on a real local cluster: every item once, crashes retried, failures once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from medm3.executors import LocalExecutor, WorkerLostError, WorkerSpec
from tests.scale.workers import Crasher, Raiser, Square


def _calls(log: Path) -> list[str]:
    return log.read_text().split()


def test_results_equal_the_local_executor(ray_cluster: Any) -> None:
    from medm3.executors.ray_executor import RayExecutor

    spec = WorkerSpec(Square, {})
    items = list(range(20))
    local = dict(LocalExecutor().map(spec, items))
    executor = RayExecutor(workers=2)
    assert executor.workers == 2 and not executor.owns_cluster
    remote = list(executor.map(spec, items))
    assert sorted(i for i, _ in remote) == items  # each item exactly once
    assert dict(remote) == local == {i: i * i for i in items}


def test_killed_actor_items_run_elsewhere_exactly_once(ray_cluster: Any, tmp_path: Path) -> None:
    from medm3.executors.ray_executor import RayExecutor

    log = tmp_path / "calls.txt"
    executor = RayExecutor(workers=2)
    results = executor.map(WorkerSpec(Square, {"delay": 0.3, "log": str(log)}), list(range(12)))
    got = [next(results)]
    victim = executor.actors[0]
    ray_cluster.kill(victim)  # mid-run: it holds items in flight
    got += list(results)
    assert sorted(i for i, _ in got) == list(range(12))
    assert all(v == i * i for i, v in got)
    assert executor.replaced >= 1 and victim not in executor.actors
    # the killed actor's items were started again elsewhere: some ran twice, none was lost
    assert set(_calls(log)) == {str(i) for i in range(12)}


def test_an_item_that_kills_its_worker_is_given_up_once(ray_cluster: Any, tmp_path: Path) -> None:
    from medm3.executors.ray_executor import MAX_ATTEMPTS, RayExecutor

    log = tmp_path / "calls.txt"
    lost: list[tuple[int, int, str]] = []

    def on_lost(index: int, payload: int, reason: str) -> str:
        lost.append((index, payload, reason))
        return "lost"

    executor = RayExecutor(workers=2)
    spec = WorkerSpec(Crasher, {"bad": 3, "log": str(log)})
    got = dict(executor.map(spec, list(range(8)), on_lost=on_lost))
    assert got == {**{i: i * i for i in range(8)}, 3: "lost"}
    assert [(i, p) for i, p, _ in lost] == [(3, 3)]
    assert _calls(log).count("crash") == MAX_ATTEMPTS
    with pytest.raises(WorkerLostError, match="died 3 times"):
        list(RayExecutor(workers=1).map(spec, [3]))


def test_a_worker_exception_is_raised_unchanged(ray_cluster: Any) -> None:
    from medm3.executors.ray_executor import RayExecutor

    with pytest.raises(ValueError, match="item 2 is bad"):
        list(RayExecutor(workers=2).map(WorkerSpec(Raiser, {"bad": 2}), list(range(5))))
    with pytest.raises(ValueError, match="item 2 is bad"):
        list(LocalExecutor().map(WorkerSpec(Raiser, {"bad": 2}), list(range(5))))


def test_the_local_cluster_uses_loopback_only(ray_cluster: Any) -> None:
    """Every Ray process of the test cluster listens and talks on 127.0.0.1 only."""
    psutil = pytest.importorskip("psutil")
    assert {n["NodeManagerAddress"] for n in ray_cluster.nodes()} == {"127.0.0.1"}
    seen: set[str] = set()
    ray_procs = 0
    for proc in psutil.Process().children(recursive=True):
        try:  # actors killed by earlier tests may be gone or zombies by now
            if not any(w in " ".join(proc.cmdline()) for w in ("ray", "gcs_server", "raylet")):
                continue
            conns = proc.net_connections(kind="inet")
        except psutil.Error:
            continue
        ray_procs += 1
        seen.update(addr.ip for conn in conns for addr in (conn.laddr, conn.raddr) if addr)
    assert ray_procs
    loopback = {"127.0.0.1", "::1", "::ffff:127.0.0.1", "0.0.0.0", "::"}
    assert seen, "no Ray sockets found"
    assert seen <= loopback, f"Ray used non-loopback addresses: {sorted(seen - loopback)}"
