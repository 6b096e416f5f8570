"""Benchmark: CXR ensemble, warm and batched vs reloading the 8 models per image.

Not a test: it prints figures. The VILA-M3 reference demo constructed the
TorchXRayVision models for every prompt; medm3 loads them once per process
and batches images through each model. Three ways are timed on the same
machine, with the same random weights (written to a temporary cache under
torchxrayvision's file names, loaded through its real ``weights=`` path):

* ``reload``: a fresh :class:`CXRExpert` per image (constructs and loads all
  8 models, then classifies the one image), as the demo did per prompt;
* ``warm``: one loaded expert, one image per call;
* ``batched``: one loaded expert, all N images in one ``predict_batch`` call.

Usage::

    python benchmarks/bench_cxr.py [--n-images 8] [--device cpu|cuda|auto]
        [--reload-images 2] [--batch-size 16] [--image PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_IMAGE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cxr"


def _calibrate_batchnorm(net: Any, size: int) -> None:
    """Realistic BatchNorm statistics for a random net (one train-mode pass).

    Random nets with default running stats blow activations up or down to
    denormal floats, which are much slower on CPUs than real weights would be.
    """
    import torch
    import torch.nn.functional as F

    x = F.interpolate(torch.rand(2, 1, 8, 8), size=(size, size), mode="bilinear")
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    with torch.no_grad():
        net(x * 2048.0 - 1024.0)
    net.eval()


def write_random_weights(folder: Path) -> None:
    """Random-weight files for all CXR models under xrv's release file names."""
    import torch
    import torchvision

    from medm3.experts.catalogue import CXR_MODELS, xrv_filename
    from medm3.experts.xrv import import_xrv

    xrv = import_xrv()
    torch.manual_seed(0)
    dense = xrv.models.DenseNet(num_classes=18)
    _calibrate_batchnorm(dense, 64)
    for name in CXR_MODELS:
        path = folder / xrv_filename(name)
        if name.startswith("resnet"):
            net = torchvision.models.resnet50(num_classes=18, weights=None)
            net.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
            _calibrate_batchnorm(net, 128)
            torch.save(net.state_dict(), path)
        else:
            torch.save(dense, path)  # xrv loads whole pickled DenseNets


def load_images(path: Path | None, n: int) -> list:
    """N images: the given file, else the real sample CXRs cycled, else synthetic 1024^2."""
    from medm3.imaging import load_image
    from medm3.imaging.image import MedicalImage

    if path is not None:
        files = [path]
    else:
        files = [
            p
            for p in (DEFAULT_IMAGE / "nih_00000001_000.png", DEFAULT_IMAGE / "cxr_monochrome1.dcm")
            if p.is_file()
        ]
    if files:
        loaded = [load_image(f, modality="XR") for f in files]
        return [loaded[i % len(loaded)] for i in range(n)]
    rng = np.random.default_rng(0)
    return [
        MedicalImage(
            rng.integers(0, 256, (1024, 1024), dtype=np.uint8),
            (1.0, 1.0),
            np.eye(4),
            "XR",
            "caller",
            f"synthetic_{i}",
        )
        for i in range(n)
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print seconds per image and the speed-up."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=8, help="images for warm/batched")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument(
        "--reload-images", type=int, default=None, help="images for reload (default: min(N, 3))"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward pass")
    parser.add_argument("--image", type=Path, default=None, help="CXR file to repeat")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from medm3.experts.cxr import CXRExpert

    n = max(1, args.n_images)
    n_reload = max(1, args.reload_images if args.reload_images is not None else min(n, 3))
    images = load_images(args.image, n)
    with tempfile.TemporaryDirectory(prefix="bench_cxr_") as tmp:
        weights = Path(tmp)
        t0 = time.perf_counter()
        write_random_weights(weights)
        print(f"random weights written in {time.perf_counter() - t0:.1f} s ({weights})")
        device = None if args.device == "auto" else args.device

        # reload per image (the reference demo's behaviour, per prompt)
        reload_times = []
        for image in images[:n_reload]:
            t = time.perf_counter()
            CXRExpert(device=device, weights=weights).predict_batch([image])
            reload_times.append(time.perf_counter() - t)

        expert = CXRExpert(device=device, weights=weights, batch_size=args.batch_size)
        t = time.perf_counter()
        expert.setup()
        setup_s = time.perf_counter() - t
        expert.predict_batch(images[:1])  # warm-up (allocator, oneDNN/cuDNN plans)

        warm_times = []
        for image in images:
            t = time.perf_counter()
            expert.predict_batch([image])
            warm_times.append(time.perf_counter() - t)

        t = time.perf_counter()
        expert.predict_batch(images)
        batched_s = time.perf_counter() - t

    reload_per = float(np.median(reload_times))
    warm_per = float(np.median(warm_times))
    batched_per = batched_s / n
    dev = str(expert._device)
    name = torch.cuda.get_device_name(expert._device) if dev.startswith("cuda") else "cpu"
    print(
        f"device: {dev} ({name}), torch threads: {torch.get_num_threads()}, "
        f"torch {torch.__version__}, python {sys.version.split()[0]}"
    )
    print(f"images: {n} (reload: {n_reload}), batch size {args.batch_size}")
    print(f"one-time setup (8 models): {setup_s:.2f} s")
    print(f"{'mode':<34}{'s / image':>12}{'vs reload':>12}")
    rows = [
        ("reload 8 models per image (demo)", reload_per),
        ("warm, one image per call", warm_per),
        (f"warm + batched ({n} in one call)", batched_per),
    ]
    for label, per in rows:
        print(f"{label:<34}{per:>12.3f}{reload_per / per:>11.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
