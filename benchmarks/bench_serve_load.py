"""Benchmark: `m3 serve` under concurrent clients on loopback (mock or real-cost VILA).

Not a test: it prints figures. A server process is started, one synthetic CT
volume is uploaded, then for each client count (default 16, then 32) that many
clients talk to the server for ``--duration`` seconds: each opens a session
about the CT (the model sees a rendered slice), then asks follow-up questions
in it; every ``--stream-every``-th request is streamed (SSE). Reported per
phase: requests, errors (goal: 0), throughput, p50/p95/max latency, and the
server's resident memory.

``--backend mock`` (default) answers after ``--model-ms``: it measures the
server's own overhead (issue 13 goal: >= 500 req/s at 16 clients, p95 <= 50 ms).

``--backend vila --model DIR`` (or ``--make-model tiny|big`` to build a random
VILA-M3 checkpoint: ``big`` has 8 layers of width 512) runs a real-cost model
on CPU, with dynamic batching (``--batch-size``, ``--batch-wait-ms``); it also
runs the same phases on an unbatched server (``--batch-size 1``) and a fixed
question set on both, and prints the throughput ratios (goal: 16 clients >= 3x
one client) and whether every answer is identical. Usage::

    python benchmarks/bench_serve_load.py [--duration 60] [--clients 16 32] [--model-ms 0]
    python benchmarks/bench_serve_load.py --backend vila --make-model big --clients 1 16 \
        --duration 30 --batch-size 16 --max-new-tokens 16
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
def serve_child(args: argparse.Namespace) -> None:
    """Run the server in this process (the benchmark starts it as a child)."""
    import uvicorn

    from medm3.serve import ServeSettings, create_app

    if args.backend == "mock":
        from medm3.vlm.mock import MockBackend

        def answer(messages: list[Any]) -> str:
            if args.model_ms > 0:
                time.sleep(args.model_ms / 1000)
            return "The scan shows an abdomen; no expert was needed for this answer."

        vlm: Any = MockBackend("mock", script=answer)
    else:
        from medm3.vlm.registry import load_backend

        vlm = load_backend("vila", str(args.model), device="cpu", batch_size=args.batch_size)
    settings = ServeSettings(
        vlm=vlm,
        data_dir=args.data_dir,
        ui=False,
        max_queue=args.max_queue,
        use_experts=False,
        session_cache=64,
        batch_size=args.batch_size,
        batch_wait_ms=args.batch_wait_ms,
        max_new_tokens=args.max_new_tokens,
    )
    port = args.port
    uvicorn.run(create_app(settings), host="127.0.0.1", port=port, log_level="warning")


def _model_dir(args: argparse.Namespace, tmp: Path) -> Path | None:
    if args.backend != "vila":
        return None
    if args.model is not None:
        return Path(args.model)
    from medm3.testing import build_tiny_vila

    if args.make_model == "big":
        return build_tiny_vila(tmp / "vila-big", hidden_size=512, num_hidden_layers=8)
    return build_tiny_vila(tmp / "vila-tiny")


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
    http: Any,
    file_id: str,
    stop_at: float,
    latencies: list[float],
    errors: list[str],
    stream_every: int,
    answers: dict[tuple[int, int], str] | None = None,
    client: int = 0,
    fixed: int = 0,
) -> None:
    session_id = None
    n = 0
    while (n < fixed) if fixed else (time.monotonic() < stop_at):
        content: list[dict[str, Any]] = [{"type": "text", "text": f"Question {n}?"}]
        body: dict[str, Any] = {"model": "medm3", "messages": [{"role": "user"}]}
        if session_id is None:
            content.append({"type": "image_url", "image_url": {"url": f"medm3://file/{file_id}"}})
        else:
            body["session_id"] = session_id
        body["messages"][0]["content"] = content
        stream = stream_every > 0 and n % stream_every == stream_every - 1
        body["stream"] = stream
        start = time.perf_counter()
        try:
            r = await http.post("/v1/chat/completions", json=body)
            ok = r.status_code == 200 and (not stream or r.text.rstrip().endswith("[DONE]"))
            if not ok:
                errors.append(f"{r.status_code} {r.text[:120]}")
            elif not stream:
                out = r.json()
                session_id = session_id or out["medm3"]["session_id"]
                if answers is not None:
                    answers[(client, n)] = out["choices"][0]["message"]["content"]
        except Exception as exc:  # network errors count as errors
            errors.append(f"{type(exc).__name__}: {exc}")
        latencies.append(time.perf_counter() - start)
        n += 1


async def _phase(
    url: str,
    file_id: str,
    clients: int,
    duration: float,
    stream_every: int,
    answers: dict[tuple[int, int], str] | None = None,
    fixed: int = 0,
) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as http:
        start = time.monotonic()
        stop_at = start + duration
        await asyncio.gather(
            *(
                _client(http, file_id, stop_at, latencies, errors, stream_every, answers, i, fixed)
                for i in range(clients)
            )
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


class Server:
    """The server child process (started and stopped with ``with``)."""

    def __init__(self, args: argparse.Namespace, data_dir: Path, batch_size: int) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, __file__, "--serve-child", "--port", str(self.port)]
        self.cmd += ["--data-dir", str(data_dir), "--max-queue", str(args.max_queue)]
        self.cmd += ["--model-ms", str(args.model_ms), "--backend", args.backend]
        self.cmd += ["--batch-size", str(batch_size), "--batch-wait-ms", str(args.batch_wait_ms)]
        self.cmd += ["--max-new-tokens", str(args.max_new_tokens)]
        if args.model is not None:
            self.cmd += ["--model", str(args.model)]

    def __enter__(self) -> Server:
        import httpx

        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        self.proc = subprocess.Popen(self.cmd, env=env)
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).json().get("status") == "ok":
                    return self
            except (httpx.HTTPError, ValueError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.2)

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _run_server(
    args: argparse.Namespace, tmp: Path, ct: Path, label: str, batch_size: int
) -> tuple[dict[int, dict[str, Any]], dict[tuple[int, int], str]]:
    import httpx

    results: dict[int, dict[str, Any]] = {}
    answers: dict[tuple[int, int], str] = {}
    with Server(args, tmp / f"data-{label}", batch_size) as server:
        with open(ct, "rb") as fh:
            reply = httpx.post(
                f"{server.url}/v1/files",
                files={"file": (ct.name, fh)},
                headers={"X-Requested-With": "bench_serve_load"},  # the server's CSRF rule
                timeout=60,
            )
        if reply.status_code != 200:
            raise SystemExit(f"upload refused: HTTP {reply.status_code} {reply.text[:300]}")
        file_id = reply.json()["id"]
        asyncio.run(_phase(server.url, file_id, 2, args.warmup, args.stream_every))
        print(
            f"[{label}] server RSS {_rss_mib(server.proc.pid):.0f} MiB (model: {args.backend}"
            + (f", {args.model_ms:g} ms/answer" if args.backend == "mock" else "")
            + f"; batch size {batch_size}, wait {args.batch_wait_ms:g} ms; "
            f"queue {args.max_queue}; streamed: every {args.stream_every or 'never'}; loopback)"
        )
        print(
            f"{'clients':>7} {'requests':>8} {'errors':>6} {'req/s':>7} "
            f"{'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'RSS MiB':>8}"
        )
        for clients in args.clients:
            r = asyncio.run(_phase(server.url, file_id, clients, args.duration, args.stream_every))
            results[clients] = r
            print(
                f"{r['clients']:>7} {r['requests']:>8} {r['errors']:>6} {r['rps']:>7.1f} "
                f"{r['p50']:>8.1f} {r['p95']:>8.1f} {r['max']:>8.1f} "
                f"{_rss_mib(server.proc.pid):>8.0f}"
            )
            if r["first_error"]:
                print(f"        first error: {r['first_error']}")
        if args.backend == "vila":  # a fixed question set, to compare answers across servers
            asyncio.run(
                _phase(server.url, file_id, max(args.clients), 0, 0, answers, fixed=args.fixed)
            )
    return results, answers


def main() -> None:
    """Start the server(s), run the phases, print the figures, stop the server(s)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=60.0, help="seconds per phase")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up")
    ap.add_argument("--clients", type=int, nargs="+", default=[16, 32])
    ap.add_argument("--backend", choices=["mock", "vila"], default="mock")
    ap.add_argument("--model", type=Path, default=None, help="VILA-M3 checkpoint folder")
    ap.add_argument("--make-model", choices=["tiny", "big"], default="tiny")
    ap.add_argument("--model-ms", type=float, default=0.0, help="mock: model time per answer")
    ap.add_argument("--batch-size", type=int, default=None, help="default: 1 (mock), 16 (vila)")
    ap.add_argument("--batch-wait-ms", type=float, default=20.0)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--stream-every", type=int, default=None, help="default: 2 (mock), 0 (vila)")
    ap.add_argument("--fixed", type=int, default=2, help="vila: questions per client compared")
    ap.add_argument("--max-queue", type=int, default=64, help="server queue (>= clients: no 429)")
    ap.add_argument("--serve-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.batch_size is None:
        args.batch_size = 16 if args.backend == "vila" else 1
    if args.stream_every is None:
        args.stream_every = 0 if args.backend == "vila" else 2
    if args.serve_child:
        serve_child(args)
        return

    with tempfile.TemporaryDirectory(prefix="m3-bench-serve-") as tmp_name:
        tmp = Path(tmp_name)
        args.model = _model_dir(args, tmp)
        ct = _synthetic_ct(tmp)
        runs = [("batched" if args.batch_size > 1 else "server", args.batch_size)]
        if args.backend == "vila" and args.batch_size > 1:
            runs.append(("unbatched", 1))
        results = {label: _run_server(args, tmp, ct, label, bs) for label, bs in runs}
    if len(results) < 2:
        return
    (b, b_answers), (u, u_answers) = results["batched"], results["unbatched"]
    lo, hi = min(args.clients), max(args.clients)
    print(
        f"batched: {hi} clients {b[hi]['rps']:.2f} req/s = {b[hi]['rps'] / b[lo]['rps']:.2f}x "
        f"{lo} client(s) ({b[lo]['rps']:.2f} req/s; goal for 16 vs 1: >= 3x)"
    )
    print(
        f"{hi} clients: batched {b[hi]['rps']:.2f} req/s vs unbatched {u[hi]['rps']:.2f} req/s "
        f"= {b[hi]['rps'] / u[hi]['rps']:.2f}x"
    )
    same = sum(b_answers.get(k) == v for k, v in u_answers.items())
    print(
        f"answers to the fixed question set ({len(u_answers)} requests, {hi} clients at once): "
        f"{same} identical batched vs unbatched"
        + (" (all)" if same == len(u_answers) == len(b_answers) else " (MISMATCH)")
    )


if __name__ == "__main__":
    main()
