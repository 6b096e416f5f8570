"""Benchmark: one CPU-bound batch on the local executor vs 1 and 2 Ray workers.

Not a test: it prints figures. The batch is a real batch expert run (the
MEASURE expert: connected components, volumes, diameters, HU statistics and an
overlay per input) over ``--items`` inputs of a synthetic CT with a label map,
written with the same table and result folders as ``m3 experts run``. Also
measured: Ray's overhead per item (a no-op worker through one actor, actor
start excluded). Goals: 2 workers >= 1.6x one worker on 2 cores; overhead
<= 10 ms per item. Usage::

    python benchmarks/bench_scale.py [--items 64] [--shape 128 128 64] [--cpus 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class Noop:
    """A worker that does nothing (overhead measurement)."""

    def __call__(self, item: int) -> int:
        return item


def _inputs(folder: Path, n: int, shape: tuple[int, int, int]) -> Path:
    import nibabel as nib

    rng = np.random.default_rng(0)
    ct = rng.integers(-100, 200, size=shape).astype(np.int16)
    labels = np.zeros(shape, dtype=np.uint8)
    x, y, z = shape
    labels[x // 8 : x // 2, y // 8 : y // 2, z // 8 : z // 2] = 1  # liver
    labels[x // 2 : 7 * x // 8, y // 2 : 7 * y // 8, z // 4 : 3 * z // 4] = 3  # spleen
    labels[(rng.random(shape) < 0.002)] = 26  # scattered "tumours": many components
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    nib.save(nib.Nifti1Image(ct, affine), folder / "ct.nii.gz")
    nib.save(nib.Nifti1Image(labels, affine), folder / "seg.nii.gz")
    listing = folder / "list.csv"
    rows = [f"case{i:03d},ct.nii.gz,seg.nii.gz" for i in range(n)]
    listing.write_text("id,image,mask\n" + "\n".join(rows) + "\n")
    return listing


class Timed:
    """Wraps an executor and records when each result arrives."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.stamps: list[float] = []

    def map(self, spec: Any, payloads: Any, **kwargs: Any) -> Iterator[Any]:
        for pair in self.inner.map(spec, payloads, **kwargs):
            self.stamps.append(time.perf_counter())
            yield pair


def _batch(listing: Path, out: Path, executor: Any) -> tuple[float, float]:
    """(seconds in all, items/s once the first result is in: warm workers)."""
    from medm3.experts.batch import BatchSettings, collect_inputs, run_batch

    items = collect_inputs([], ("image", "mask"), list_file=listing)
    settings = BatchSettings(expert="measure", arg="everything", use_cache=False)
    timed = Timed(executor)
    t0 = time.perf_counter()
    summary = run_batch(settings, items, out, executor=timed, progress=False)  # type: ignore[arg-type]
    seconds = time.perf_counter() - t0
    assert summary.ok == len(items), summary.line()
    first, last = timed.stamps[0], timed.stamps[-1]
    warm = (len(items) - 1) / (last - first) if last > first else float("nan")
    return seconds, warm


def _overhead(n: int) -> tuple[float, float]:
    """Seconds of a 1-item map (actor start) and overhead per item beyond it."""
    from medm3.executors import LocalExecutor, WorkerSpec
    from medm3.executors.ray_executor import RayExecutor

    spec = WorkerSpec(Noop, {})
    ray_exec = RayExecutor(workers=1)
    t0 = time.perf_counter()
    list(ray_exec.map(spec, [0]))
    start = time.perf_counter() - t0
    t0 = time.perf_counter()
    list(ray_exec.map(spec, list(range(n))))
    ray_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    list(LocalExecutor().map(spec, list(range(n))))
    local_seconds = time.perf_counter() - t0
    return start, (ray_seconds - start - local_seconds) / n


def main() -> None:
    """Run the benchmark and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=64)
    ap.add_argument("--shape", type=int, nargs=3, default=[128, 128, 64])
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    args = ap.parse_args()

    import ray

    from medm3.executors import LocalExecutor
    from medm3.executors.ray_executor import RayExecutor

    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        root = Path(tmp)
        listing = _inputs(root, args.items, tuple(args.shape))
        t0 = time.perf_counter()
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # loopback only
        ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="ERROR")
        ray_start = time.perf_counter() - t0
        runs = {
            "local": _batch(listing, root / "local", LocalExecutor()),
            "ray, 1 worker": _batch(listing, root / "ray1", RayExecutor(workers=1)),
            "ray, 2 workers": _batch(listing, root / "ray2", RayExecutor(workers=2)),
        }
        same = (root / "local" / "case000" / "result.json").read_text().split('"timings"')[0]
        other = (root / "ray2" / "case000" / "result.json").read_text().split('"timings"')[0]
        actor_start, overhead = _overhead(512)
        ray.shutdown()

    n = args.items
    print(f"batch: {n} MEASURE items, CT {'x'.join(map(str, args.shape))}, {args.cpus} CPUs")
    print(f"ray.init (local cluster start): {ray_start:.1f} s, not counted below")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average now: {load} (other processes on these CPUs skew the figures)")
    print(f"{'executor':<16} {'seconds':>8} {'items/s':>8} {'warm items/s':>13}")
    for name, (seconds, warm) in runs.items():
        print(f"{name:<16} {seconds:>8.2f} {n / seconds:>8.2f} {warm:>13.2f}")
    (one, one_warm), (two, two_warm) = runs["ray, 1 worker"], runs["ray, 2 workers"]
    print(f"2 workers / 1 worker: {one / two:.2f}x, warm {two_warm / one_warm:.2f}x (goal >= 1.6x)")
    print(f"1 worker / local:     {runs['local'][0] / one:.2f}x")
    print(f"actor start: {actor_start * 1000:.0f} ms")
    print(f"Ray overhead per item: {overhead * 1000:.2f} ms (goal <= 10 ms)")
    print(f"result.json equal (timings aside): {same == other}")


if __name__ == "__main__":
    main()
