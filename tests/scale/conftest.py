"""Fixtures of the scale-out tests: one real local Ray cluster per module (2 CPUs)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

# Ray's single-machine mode: every Ray process (and any `m3 ... --executor ray`
# subprocess, which inherits this) talks over 127.0.0.1 only, never over the
# machine's network address.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    """``ray.init(num_cpus=2)``: a real local cluster, shut down after the module."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'medm3[ray]')")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Torch with one intra-op thread, as in a Ray worker that reserves one CPU.

    CPU float sums depend on the thread count, so a local reference run must use
    the workers' count for its numbers to match to the last bit.
    """
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
