"""Benchmark: `m3 serve` under concurrent clients on loopback (mock model).

Not a test: it prints figures. A server process is started with the scripted
mock backend (answering after ``--model-ms``), one synthetic CT volume is
uploaded, then for each client count (default 16, then 32) that many clients
talk to the server for ``--duration`` seconds: each opens a session about the
CT (the model sees a rendered slice), then asks follow-up questions in it,
alternating plain and streamed (SSE) requests. Reported per phase: requests,
errors (goal: 0), throughput, p50/p95/max latency, and the server's resident
memory before and after. The server is stopped at the end. Usage::

    python benchmarks/bench_serve_load.py [--duration 60] [--clients 16 32] [--model-ms 0]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# ---------------------------------------------------------------- server side
def serve_child(port: int, data_dir: Path, max_queue: int, model_ms: float) -> None:
    """Run the server in this process (the benchmark starts it as a child)."""
    import uvicorn

    from medm3.serve import ServeSettings, create_app
    from medm3.vlm.mock import MockBackend

    def answer(messages: list[Any]) -> str:
        if model_ms > 0:
            time.sleep(model_ms / 1000)
        return "The scan shows an abdomen; no expert was needed for this answer."

    settings = ServeSettings(
        vlm=MockBackend("mock", script=answer),
        data_dir=data_dir,
        ui=False,
        max_queue=max_queue,
        use_experts=False,
        session_cache=64,
    )
    uvicorn.run(create_app(settings), host="127.0.0.1", port=port, log_level="warning")


# ---------------------------------------------------------------- client side
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _synthetic_ct(folder: Path) -> Path:
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(0)
    array = rng.integers(-200, 300, size=(160, 160, 48)).astype(np.int16)
    path = folder / "synthetic_ct.nii.gz"
    nib.save(nib.Nifti1Image(array, np.diag([0.9, 0.9, 3.0, 1.0])), path)
    return path


def _rss_mib(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 1048576


async def _client(
    http: Any, file_id: str, stop_at: float, latencies: list[float], errors: list[str]
) -> None:
    session_id = None
    n = 0
    while time.monotonic() < stop_at:
        content: list[dict[str, Any]] = [{"type": "text", "text": f"Question {n}?"}]
        body: dict[str, Any] = {"model": "mock", "messages": [{"role": "user"}]}
        if session_id is None:
            content.append({"type": "image_url", "image_url": {"url": f"medm3://file/{file_id}"}})
        else:
            body["session_id"] = session_id
        body["messages"][0]["content"] = content
        stream = n % 2 == 1
        body["stream"] = stream
        start = time.perf_counter()
        try:
            r = await http.post("/v1/chat/completions", json=body)
            ok = r.status_code == 200 and (not stream or r.text.rstrip().endswith("[DONE]"))
            if not ok:
                errors.append(f"{r.status_code} {r.text[:120]}")
            elif session_id is None:
                session_id = r.json()["medm3"]["session_id"]
        except Exception as exc:  # network errors count as errors
            errors.append(f"{type(exc).__name__}: {exc}")
        latencies.append(time.perf_counter() - start)
        n += 1


async def _phase(url: str, file_id: str, clients: int, duration: float) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        start = time.monotonic()
        stop_at = start + duration
        await asyncio.gather(
            *(_client(http, file_id, stop_at, latencies, errors) for _ in range(clients))
        )
        elapsed = time.monotonic() - start
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000

    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
        "rps": len(latencies) / elapsed,
        "p50": pct(0.50),
        "p95": pct(0.95),
        "max": ordered[-1] * 1000,
        "mean": statistics.fmean(ordered) * 1000,
    }


def main() -> None:
    """Start the server, run the phases, print the figures, stop the server."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=60.0, help="seconds per phase")
    ap.add_argument("--clients", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--model-ms", type=float, default=0.0, help="simulated model time per answer")
    ap.add_argument("--max-queue", type=int, default=64, help="server queue (>= clients: no 429)")
    ap.add_argument("--serve-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_child:
        serve_child(args.port, args.data_dir, args.max_queue, args.model_ms)
        return

    import httpx

    with tempfile.TemporaryDirectory(prefix="m3-bench-serve-") as tmp:
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        cmd = [
            sys.executable,
            __file__,
            "--serve-child",
            "--port",
            str(port),
            "--data-dir",
            str(Path(tmp) / "data"),
            "--max-queue",
            str(args.max_queue),
            "--model-ms",
            str(args.model_ms),
        ]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        server = subprocess.Popen(cmd, env=env)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the server did not start")
                time.sleep(0.1)
            ct = _synthetic_ct(Path(tmp))
            with open(ct, "rb") as fh:
                file_id = httpx.post(
                    f"{url}/v1/files", files={"file": (ct.name, fh)}, timeout=60
                ).json()["id"]
            asyncio.run(_phase(url, file_id, 2, 2.0))  # warm-up
            rss_before = _rss_mib(server.pid)
            print(
                f"server RSS before: {rss_before:.0f} MiB  (model: mock, "
                f"{args.model_ms:g} ms/answer; queue {args.max_queue}; loopback)"
            )
            print(
                f"{'clients':>7} {'requests':>8} {'errors':>6} {'req/s':>7} "
                f"{'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'RSS MiB':>8}"
            )
            for clients in args.clients:
                r = asyncio.run(_phase(url, file_id, clients, args.duration))
                rss = _rss_mib(server.pid)
                print(
                    f"{r['clients']:>7} {r['requests']:>8} {r['errors']:>6} {r['rps']:>7.1f} "
                    f"{r['p50']:>8.1f} {r['p95']:>8.1f} {r['max']:>8.1f} {rss:>8.0f}"
                )
                if r["first_error"]:
                    print(f"        first error: {r['first_error']}")
            print(f"server RSS after: {_rss_mib(server.pid):.0f} MiB")
        finally:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()


if __name__ == "__main__":
    main()
