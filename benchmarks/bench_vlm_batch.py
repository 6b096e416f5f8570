"""Benchmark: VILA-M3 ``generate_batch`` vs one-at-a-time ``generate``.

Not a test: it prints figures. A tiny random-weight VILA-M3 checkpoint in the
released layout (LLM hidden 256, 4 layers by default) answers N prompts with
one image each; every answer is forced to the same length (``min_new_tokens =
max_new_tokens``) so both paths do the same work. Goal: batched >= 3x the
samples/s of sequential. Greedy answers must be identical.

Usage::

    python benchmarks/bench_vlm_batch.py [--n 16] [--new-tokens 32] [--device cpu]
        [--dtype auto] [--batch-size 16] [--hidden 256] [--layers 4] [--model DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    """Build (or take) a checkpoint, time both paths and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16, help="prompts (one image each)")
    parser.add_argument("--new-tokens", type=int, default=32, help="tokens per answer")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--dtype", default="auto", help="auto, float16, bfloat16, float32")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=256, help="tiny LLM width")
    parser.add_argument("--layers", type=int, default=4, help="tiny LLM layers")
    parser.add_argument("--template", default="llama_3", choices=["llama_3", "vicuna_v1"])
    parser.add_argument("--model", help="use this checkpoint folder instead of a tiny one")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: keep)")
    args = parser.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    from medm3.testing import build_tiny_vila
    from medm3.vlm.base import GenerationConfig, ImagePart, Message, TextPart
    from medm3.vlm.vila import VilaBackend

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or build_tiny_vila(
            tmp,
            args.template,
            hidden_size=args.hidden,
            num_hidden_layers=args.layers,
            vision_hidden_size=64,
            image_size=54,  # 9x9 patches -> 25 image tokens
            patch_size=6,
        )
        backend = VilaBackend(
            str(model), device=args.device, dtype=args.dtype, batch_size=args.batch_size
        )
        rng = np.random.default_rng(0)
        questions = [
            "What is this?",
            "Describe the findings.",
            "Is there a tumor in the liver? Answer yes or no.",
            "Which organ is enlarged?",
        ]
        conversations = [
            [
                Message(
                    "user",
                    [
                        ImagePart(Image.fromarray(rng.integers(0, 256, (64, 64, 3), np.uint8))),
                        TextPart(questions[i % len(questions)]),
                    ],
                )
            ]
            for i in range(args.n)
        ]
        config = GenerationConfig(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens)

        backend.generate(conversations[0], config)  # warm-up
        backend.generate_batch(conversations[:2], config)
        sync = torch.cuda.synchronize if backend.device.type == "cuda" else (lambda: None)

        sync()
        start = time.perf_counter()
        single = [backend.generate(c, config) for c in conversations]
        sync()
        t_single = time.perf_counter() - start

        start = time.perf_counter()
        batched = backend.generate_batch(conversations, config)
        sync()
        t_batch = time.perf_counter() - start

    same = sum(a.text == b.text for a, b in zip(single, batched, strict=True))
    tokens = sum(g.completion_tokens for g in batched)
    print(
        f"device            {backend.device} ({backend.dtype}), torch threads "
        f"{torch.get_num_threads()}"
    )
    print(
        f"model             {'tiny' if not args.model else args.model}: hidden "
        f"{backend.model.config.hidden_size}, layers {backend.model.llm.config.num_hidden_layers}, "
        f"prompt ~{batched[0].prompt_tokens} positions"
    )
    print(
        f"prompts           {args.n} x 1 image, {args.new_tokens} new tokens each "
        f"({tokens} in total), batch size {args.batch_size}"
    )
    print(f"one at a time     {t_single:7.2f} s  {args.n / t_single:8.2f} samples/s")
    print(f"generate_batch    {t_batch:7.2f} s  {args.n / t_batch:8.2f} samples/s")
    print(f"speed-up          {t_single / t_batch:7.2f} x   (goal >= 3x)")
    print(f"identical answers {same}/{args.n}")


if __name__ == "__main__":
    main()
