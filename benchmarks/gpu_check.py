"""Run and time every CUDA path of medm3 once, offline, with random weights in released layouts.

Started by ``benchmarks/gpu_check.sh`` (see there). Steps, each timed, each
passing or failing on its own:

* ``vila_fp16``: VILA-M3 backend (LLM width 512, 8 layers; released folder
  layout from :func:`medm3.testing.build_tiny_vila`) in float16 on the GPU,
  one answer about an image;
* ``hf_bf16``: the transformers backend (tiny llava-hf) in bfloat16;
* ``vila_batched``: ``generate_batch`` of 8 conversations vs one at a time
  (greedy answers must be identical; speed-up printed);
* ``vista3d_amp_vs_reference``: ``benchmarks/bench_vista3d.py`` (full-size
  ``vista3d132`` bundle, random weights): medm3 warm (AMP on CUDA) vs the
  reference-style per-call bundle pipeline, goal >= 2x;
* ``brats``: BraTS SegResNet bundle (released ``init_filters=16`` layout);
* ``cxr_ensemble``: ``benchmarks/bench_cxr.py`` (torchxrayvision ensemble);
* ``train_lora_bf16`` / ``train_full_bf16``: one optimizer step of ``m3 train``
  with LoRA and with every weight trained, bf16 mixed precision;
* ``serve_batched``: ``m3 serve``'s service with dynamic batching, 4
  sessions asking at once; answers equal to the unbatched server's.

``--dry`` (or ``MEDM3_GPU_CHECK_DRY=1``) runs every step on the CPU with the
smallest shapes (the CI runs it); there float16 becomes float32 (CPU half
precision is slow and not what the step checks) and the 2x VISTA3D goal is
not enforced. A table is printed at the end; the exit status is 1 when a step
failed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MEDM3_NO_PROGRESS", "1")
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))


@dataclass
class Ctx:
    """What every step gets: device, sizes and a scratch folder."""

    dry: bool
    device: str
    tmp: Path
    verbose: bool

    @property
    def half(self) -> str:
        """``float16`` on a GPU, ``float32`` in dry mode."""
        return "float32" if self.dry else "float16"


# ------------------------------------------------------------------ fixtures
def _vila_dir(ctx: Ctx) -> Path:
    from medm3.testing import build_tiny_vila

    folder = ctx.tmp / "vila"
    if not (folder / "config.json").exists():
        sizes = {} if ctx.dry else {"hidden_size": 512, "num_hidden_layers": 8}
        build_tiny_vila(folder, **sizes)
    return folder


def _image() -> Any:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))


def _conversation(i: int) -> list[Any]:
    from medm3.vlm.base import ImagePart, Message, TextPart

    return [Message("user", [ImagePart(_image()), TextPart(f"Describe case {i}.")])]


def _ct(ctx: Ctx) -> Path:
    import nibabel as nib
    import numpy as np

    path = ctx.tmp / "ct.nii.gz"
    if not path.exists():
        rng = np.random.default_rng(0)
        array = rng.integers(-1000, 400, size=(48, 48, 24)).astype(np.int16)
        nib.save(nib.Nifti1Image(array, np.diag([1.5, 1.5, 3.0, 1.0])), path)
    return path


def _quiet(ctx: Ctx) -> Any:
    return contextlib.nullcontext() if ctx.verbose else contextlib.redirect_stdout(io.StringIO())


# --------------------------------------------------------------------- steps
def step_vila_fp16(ctx: Ctx) -> str:
    """VILA-M3 in half precision on the device: one answer."""
    from medm3.vlm.base import GenerationConfig
    from medm3.vlm.registry import load_backend

    vlm = load_backend("vila", str(_vila_dir(ctx)), device=ctx.device, dtype=ctx.half)
    gen = vlm.generate(_conversation(0), GenerationConfig(max_new_tokens=16))
    vlm.close()
    return f"{gen.completion_tokens} tokens, dtype {ctx.half}"


def step_hf_bf16(ctx: Ctx) -> str:
    """The transformers backend in bfloat16: one answer."""
    from medm3.testing import build_tiny_llava
    from medm3.vlm.base import GenerationConfig
    from medm3.vlm.hf import HFBackend

    folder = build_tiny_llava(ctx.tmp / "llava")
    vlm = HFBackend(str(folder), device=ctx.device, dtype="bfloat16")
    gen = vlm.generate(_conversation(0), GenerationConfig(max_new_tokens=8))
    vlm.close()
    return f"{gen.completion_tokens} tokens, bfloat16"


def step_vila_batched(ctx: Ctx) -> str:
    """``generate_batch`` vs sequential: identical greedy answers, speed-up."""
    from medm3.vlm.base import GenerationConfig
    from medm3.vlm.registry import load_backend

    vlm = load_backend("vila", str(_vila_dir(ctx)), device=ctx.device, dtype=ctx.half)
    config = GenerationConfig(max_new_tokens=16, min_new_tokens=16)
    convs = [_conversation(i) for i in range(8)]
    vlm.generate(convs[0], config)  # warm-up
    t0 = time.perf_counter()
    alone = [vlm.generate(c, config).text for c in convs]
    t1 = time.perf_counter()
    together = [g.text for g in vlm.generate_batch(convs, config)]
    t2 = time.perf_counter()
    vlm.close()
    if together != alone:
        raise AssertionError("batched greedy answers differ from one-at-a-time answers")
    return f"8 answers identical; batched {(t1 - t0) / (t2 - t1):.1f}x faster"


def step_vista3d(ctx: Ctx) -> str:
    """bench_vista3d: warm (AMP on CUDA) vs reference-style per-call pipeline."""
    import bench_vista3d

    argv = ["--device", ctx.device, "--repeats", "1"]
    if ctx.dry:
        argv += ["--image", str(_ct(ctx)), "--roi", "32"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = bench_vista3d.main(argv)
    text = out.getvalue()
    if ctx.verbose:
        print(text)
    if code:
        raise AssertionError(f"bench_vista3d exited {code}")
    ratio = next((ln for ln in text.splitlines() if ln.startswith("warm vs reference")), "")
    second = next((ln for ln in text.splitlines() if ln.startswith("second call")), "")
    if not ctx.dry and "BELOW GOAL" in ratio:
        raise AssertionError(ratio)
    setup = second.split("setup ")[1].split(" vs")[0] if "setup " in second else "?"
    return f"{ratio.replace(' (goal >= 2x)', '')}; 2nd call setup {setup}"


def step_brats(ctx: Ctx) -> str:
    """BraTS expert on four random MR sequences."""
    import numpy as np

    from medm3.experts.brats import BratsExpert
    from medm3.imaging.image import MedicalImage
    from medm3.testing import write_brats_bundle

    shape = (32, 32, 24) if ctx.dry else (160, 192, 128)
    roi = [32, 32, 24] if ctx.dry else [224, 224, 144]
    bundle = write_brats_bundle(ctx.tmp / "brats", init_filters=16, roi=roi)  # released width
    rng = np.random.default_rng(0)
    images = {
        name: MedicalImage(
            array=rng.normal(100, 20, size=shape).astype(np.float32),
            spacing=(1.0, 1.0, 1.0),
            affine=np.eye(4),
            modality="MR",
            modality_source="caller",
            source=f"{name}.nii.gz",
        )
        for name in BratsExpert.inputs
    }
    expert = BratsExpert(device=ctx.device, weights=bundle)
    result = expert.run(images, "", use_cache=False)
    again = expert.run(images, "", use_cache=False)
    return f"setup {result.timings['setup']:.2f} s, run {again.timings['run']:.2f} s (warm)"


def step_cxr(ctx: Ctx) -> str:
    """bench_cxr: the torchxrayvision ensemble, warm and batched."""
    import bench_cxr

    argv = ["--device", ctx.device, "--n-images", "2" if ctx.dry else "16"]
    argv += ["--batch-size", "2" if ctx.dry else "16"]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = bench_cxr.main(argv)
    if ctx.verbose:
        print(out.getvalue())
    if code:
        raise AssertionError(f"bench_cxr exited {code}")
    lines = [ln for ln in out.getvalue().splitlines() if "x" in ln and "faster" in ln]
    return lines[-1].strip() if lines else "ran"


def _train(ctx: Ctx, lora: bool) -> str:
    import numpy as np
    from PIL import Image

    from medm3.train.config import config_from_dict
    from medm3.train.trainer import train

    data = ctx.tmp / "train-data"
    if not (data / "train.json").exists():
        (data / "images").mkdir(parents=True)
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 40, 3), np.uint8)).save(
            data / "images" / "a.png"
        )
        rows = [
            {
                "id": f"r{i}",
                "image": "images/a.png",
                "conversations": [
                    {"from": "human", "value": "<image>\nWhat is shown?"},
                    {"from": "gpt", "value": "A chest X-ray."},
                ],
            }
            for i in range(2)
        ]
        (data / "train.json").write_text(json.dumps(rows))
    out = ctx.tmp / ("train-lora" if lora else "train-full")
    config = config_from_dict(
        {
            "model": {"kind": "vila", "path": str(_vila_dir(ctx))},
            "data": {"train": [str(data / "train.json")], "max_length": 256, "num_workers": 0},
            "lora": {"enabled": lora},
            "train": {
                "output_dir": str(out),
                "max_steps": 1,
                "batch_size": 2,
                "mixed_precision": "bf16",
                "save_steps": 0,
                "gradient_checkpointing": False,
            },
            "export": {"enabled": False},
        }
    )
    with _quiet(ctx):
        result = train(config, progress=False)
    _reset_accelerate()
    if result.steps != 1 or result.last_loss is None:
        raise AssertionError(f"expected one step with a loss, got {result}")
    return f"1 step, loss {result.last_loss:.3f}"


def _reset_accelerate() -> None:
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def step_train_lora(ctx: Ctx) -> str:
    """One bf16 training step with LoRA adapters."""
    return _train(ctx, lora=True)


def step_train_full(ctx: Ctx) -> str:
    """One bf16 training step of every weight."""
    return _train(ctx, lora=False)


def step_serve_batched(ctx: Ctx) -> str:
    """The server's service with dynamic batching: 4 sessions at once, same answers."""
    from fastapi.testclient import TestClient

    from medm3.serve import ServeSettings, create_app
    from medm3.vlm.registry import load_backend

    vlm = load_backend("vila", str(_vila_dir(ctx)), device=ctx.device, dtype=ctx.half)

    def answers(batch: int) -> tuple[list[str], float]:
        settings = ServeSettings(
            vlm=vlm,
            data_dir=ctx.tmp / f"serve-{batch}",
            ui=False,
            use_experts=False,
            batch_size=batch,
            batch_wait_ms=200,
            max_new_tokens=12,
        )
        out: list[str] = [""] * 4
        with TestClient(create_app(settings)) as client:

            def ask(i: int) -> None:
                body = {"model": "medm3", "messages": [{"role": "user", "content": f"Q{i}?"}]}
                r = client.post("/v1/chat/completions", json=body)
                r.raise_for_status()
                out[i] = r.json()["choices"][0]["message"]["content"]

            t0 = time.perf_counter()
            threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return out, time.perf_counter() - t0

    batched, tb = answers(4)
    alone, tu = answers(1)
    if batched != alone or not all(isinstance(a, str) for a in batched):
        raise AssertionError("batched server answers differ from unbatched ones")
    return f"4 sessions identical; {tu / tb:.1f}x faster batched"


def step_pytest_gpu(ctx: Ctx) -> str:
    """The tests marked ``gpu`` (``pytest -m gpu tests/gpu``), on this machine's CUDA device."""
    import subprocess

    root = Path(__file__).resolve().parents[1]
    if not (root / "tests" / "gpu").is_dir():
        return "skipped: tests/gpu not here (not a source checkout)"
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu"]
    proc = subprocess.run(
        [*cmd, "tests/gpu"], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )
    lines = proc.stdout.strip().splitlines()
    last = lines[-1] if lines else proc.stderr.strip()[-200:]
    if ctx.verbose:
        print(proc.stdout[-4000:], proc.stderr[-2000:], sep="\n")
    if proc.returncode != 0:
        raise AssertionError(f"pytest -m gpu: {last}")
    return f"pytest -m gpu: {last.strip('= ')}"


STEPS: list[tuple[str, Callable[[Ctx], str]]] = [
    ("vila_fp16", step_vila_fp16),
    ("hf_bf16", step_hf_bf16),
    ("vila_batched", step_vila_batched),
    ("vista3d_amp_vs_reference", step_vista3d),
    ("brats", step_brats),
    ("cxr_ensemble", step_cxr),
    ("train_lora_bf16", step_train_lora),
    ("train_full_bf16", step_train_full),
    ("serve_batched", step_serve_batched),
    ("pytest_gpu", step_pytest_gpu),
]


def main(argv: list[str] | None = None) -> int:
    """Run the steps, print the table; 0 when every step passed."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry", action="store_true", help="CPU only, smallest shapes (CI)")
    ap.add_argument("--device", default=None, help="default: cuda (cpu with --dry)")
    ap.add_argument("--only", nargs="*", default=None, help="run only these steps")
    ap.add_argument("-v", "--verbose", action="store_true", help="show the steps' output")
    args = ap.parse_args(argv)
    dry = args.dry or os.environ.get("MEDM3_GPU_CHECK_DRY", "") not in ("", "0")
    import torch

    device = args.device or ("cpu" if dry else "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device (use --dry for the CPU check)", file=sys.stderr)
        return 2
    what = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
    print(f"gpu_check: device {device} ({what}), torch {torch.__version__}, dry={dry}")
    rows: list[tuple[str, str, float, str]] = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="m3-gpu-check-") as tmp:
        ctx = Ctx(dry=dry, device=device, tmp=Path(tmp), verbose=args.verbose)
        for name, fn in STEPS:
            if args.only and name not in args.only:
                continue
            t0 = time.perf_counter()
            try:
                note, status = fn(ctx), "ok"
            except Exception as exc:  # every failure is reported, the next step still runs
                note, status = f"{type(exc).__name__}: {exc}".splitlines()[0][:90], "FAIL"
                if args.verbose:
                    traceback.print_exc()
            rows.append((name, status, time.perf_counter() - t0, note))
            print(f"  {name}: {status} ({rows[-1][2]:.1f} s)", flush=True)
    print(f"\n{'step':26s} {'status':6s} {'seconds':>8s}  note")
    for name, status, seconds, note in rows:
        print(f"{name:26s} {status:6s} {seconds:8.1f}  {note}")
    failed = [r[0] for r in rows if r[1] != "ok"]
    print(
        f"\ntotal {time.perf_counter() - start:.0f} s; {len(rows) - len(failed)} ok, "
        f"{len(failed)} failed{': ' + ', '.join(failed) if failed else ''}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
