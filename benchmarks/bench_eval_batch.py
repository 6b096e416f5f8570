"""Benchmark: `m3 eval` throughput, batched vs one question at a time, same tiny model.

Not a test: it prints figures. A tiny random-weight LLaVA (llava-hf layout, from
``medm3.testing.build_tiny_llava``) answers N synthetic closed VQA-RAD questions
(one 64x64 image each) through the full runner (data loading, prompts,
fsync'd predictions, scoring) twice: ``--batch-size 1`` and ``--batch-size B``.
Greedy answers must be identical; goal: batched >= 3x the samples/s.

Usage::

    python benchmarks/bench_eval_batch.py [--n 64] [--batch-size 16] [--new-tokens 16]
        [--device cpu] [--threads 0] [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def write_data(folder: Path, n: int) -> Path:
    """N closed questions with 64x64 images, LLaVA-style ``test.json``."""
    from PIL import Image

    (folder / "images").mkdir(parents=True)
    rows = []
    for i in range(n):
        Image.new("RGB", (64, 64), (i * 37 % 256, i * 11 % 256, 90)).save(
            folder / "images" / f"{i}.png"
        )
        rows.append(
            {
                "id": f"q{i}",
                "image": f"{i}.png",
                "answer_type": "CLOSED",
                "conversations": [
                    {"from": "human", "value": f"<image>\nIs there a lesion in region {i}?"},
                    {"from": "gpt", "value": "yes" if i % 2 else "no"},
                ],
            }
        )
    path = folder / "test.json"
    path.write_text(json.dumps(rows))
    return path


def main() -> None:
    """Build the model and data, time both batch sizes, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="questions")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=16, help="max new tokens per answer")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: keep)")
    parser.add_argument("--model", help="use this checkpoint folder instead of a tiny one")
    args = parser.parse_args()

    import torch

    from medm3.eval.runner import run_eval
    from medm3.testing.tiny_hf import build_tiny_llava
    from medm3.vlm.hf import HFBackend

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = args.model or str(build_tiny_llava(root / "model"))
        data = write_data(root / "data", args.n)
        results = {}
        for batch in (1, args.batch_size):
            vlm = HFBackend(model, device=args.device, batch_size=batch)
            # warm-up outside the timing (first-call allocations)
            run_eval(
                "vqa-rad",
                vlm,
                data,
                root / f"warm{batch}",
                limit=batch,
                batch_size=batch,
                max_new_tokens=args.new_tokens,
            )
            t0 = time.perf_counter()
            run = run_eval(
                "vqa-rad",
                vlm,
                data,
                root / f"run{batch}",
                batch_size=batch,
                max_new_tokens=args.new_tokens,
            )
            wall = time.perf_counter() - t0
            log = json.loads(run.log_path.read_text())
            texts = [json.loads(x)["text"] for x in run.predictions_path.read_text().splitlines()]
            tokens = sum(
                json.loads(x)["completion_tokens"]
                for x in run.predictions_path.read_text().splitlines()
            )
            results[batch] = (
                run.n_samples / wall,
                log["timings"]["samples_per_second"],
                texts,
                tokens,
            )
            print(
                f"batch {batch:>3}: {run.n_samples} questions in {wall:6.2f} s  "
                f"{run.n_samples / wall:7.2f} samples/s end to end  "
                f"({log['timings']['samples_per_second']:7.2f} samples/s in generate_batch, "
                f"{tokens} tokens)"
            )
        (e2e_1, gen_1, texts_1, _), (e2e_b, gen_b, texts_b, _) = (
            results[1],
            results[args.batch_size],
        )
        print(f"speed-up end to end: {e2e_b / e2e_1:.2f}x  (generation only: {gen_b / gen_1:.2f}x)")
        print(f"identical greedy answers: {texts_1 == texts_b}")


if __name__ == "__main__":
    main()
