"""Benchmark: the agent's own overhead per expert round (model and expert time excluded).

Not a test: it prints figures. A scripted mock backend answers instantly and a
trivial expert computes almost nothing, so what remains is medm3's work per
round: rendering the VLM's view, building turns from the prompt module,
parsing triggers, the result cache, the trace. Usage::

    python benchmarks/bench_agent.py [--rounds 3] [--questions 50] [--shape 256 256 64]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    """Run the benchmark and print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="expert calls per question")
    ap.add_argument("--questions", type=int, default=50)
    ap.add_argument("--shape", type=int, nargs=3, default=[256, 256, 64])
    args = ap.parse_args()

    from tests.doubles import FakeSegExpert, volume

    from medm3.agent import AgentConfig, ChatSession
    from medm3.experts import registry
    from medm3.vlm.mock import MockBackend

    registry.EXPERTS.register(FakeSegExpert.name, FakeSegExpert, overwrite=True)
    rng = np.random.default_rng(0)
    ct = volume(rng.integers(-200, 200, size=args.shape).astype(np.int16), spacing=(0.8, 0.8, 2.5))
    calls = ["bright", "dark", "everything"]

    def script(messages):
        turns = sum(1 for m in messages if m.role == "assistant")
        done = turns % (args.rounds + 1)
        return "answer." if done == args.rounds else f"<FAKESEG({calls[done % 3]})>"

    backend = MockBackend(script=script)
    per_round: list[float] = []
    model_s = expert_s = 0.0
    for use_cache in (False,):
        session = ChatSession(
            backend,
            ct,
            AgentConfig(experts=("fakeseg",), max_rounds=args.rounds, use_cache=use_cache),
        )
        for q in range(args.questions):
            start = time.perf_counter()
            reply = session.ask(f"question {q}")
            total = time.perf_counter() - start
            model = sum(s["seconds"] for s in reply.trace if s["step"] == "generate")
            expert = sum(
                s["result"]["timings"].get("run", 0.0) for s in reply.trace if s["step"] == "expert"
            )
            model_s += model
            expert_s += expert
            per_round.append((total - model - expert) / max(1, reply.rounds))
            session.messages = session.messages[:1]  # keep the prompt size constant
    print(
        f"volume {tuple(args.shape)}, {args.rounds} expert rounds per question, "
        f"{args.questions} questions (first question includes rendering the view)"
    )
    print(
        "first question (renders the VLM's view of the volume): "
        f"{per_round[0] * args.rounds * 1000:.1f} ms of overhead"
    )
    print(
        f"agent overhead per round: median {statistics.median(per_round) * 1000:.2f} ms, "
        f"p95 {np.percentile(per_round, 95) * 1000:.2f} ms"
    )
    print(
        f"(excluded: mock model {model_s * 1000:.1f} ms, expert compute {expert_s * 1000:.1f} ms "
        "in total)"
    )


if __name__ == "__main__":
    main()
