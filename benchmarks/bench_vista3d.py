"""Benchmark: VISTA3D expert, reference-style per-call loading vs medm3 warm vs cache hit.

Not a test: it prints figures. The same full-size ``vista3d132`` network with
random weights is written once as a bundle in the released layout
(``configs/inference.json`` with the released ``network_def`` expression,
``configs/metadata.json``, ``models/model.pt``); every variant reads the same
CT from the same file on the same machine:

* ``reference``: what the bundle / VILA-M3 demo did per prompt: build the
  network, load the checkpoint, build the transforms (``LoadImaged`` ...
  ``CastToTyped``), sliding-window inference, ``VistaPostTransformd`` +
  ``Invertd``. One extra first call (``reference, cold process``) warms the
  process (kernels, allocator, page cache) and is not used in the ratios;
* ``first``: medm3's first call in a process (``load_image`` + ``Vista3DExpert.run``:
  setup + inference, stored in a fresh result cache);
* ``warm``: later calls with the result cache bypassed (``use_cache=False``),
  interleaved with the reference calls so machine-load changes affect both;
* ``hit``: later calls answered by the result cache (memory tier), plus one
  disk-tier hit through a fresh cache object on the same folder;
* ``second call, new image``: the warm expert on an image it has not seen (a
  cache miss), obtained again through ``get_expert`` as another session
  would: the same instance, so its ``setup`` stage (network, transforms,
  device placement) costs nothing.

Goals: warm >= 2x faster than reference; cache hit >= 50x faster than first;
a second call on a new image spends ~0 s on setup (issue 13).

Usage::

    python benchmarks/bench_vista3d.py [--device auto|cpu|cuda] [--roi 128]
        [--repeats 3] [--args everything] [--image PATH] [--bundle DIR]

``--roi`` sets the bundle's patch size (one number or three); a quick CPU smoke
run: ``--device cpu --repeats 1 --image small_ct.nii.gz``. The CT defaults to
``$MEDM3_TEST_DATA/ct/ct_abdomen_3mm.nii.gz`` (``MEDM3_TEST_DATA`` defaults to
``../shared/data`` beside the checkout).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("MEDM3_TEST_DATA", REPO.parent / "shared" / "data"))
NETWORK_DEF = "$monai.networks.nets.vista3d132(in_channels=@input_channels)"


def peak_rss() -> float:
    """Peak resident set size (MiB) since the last :func:`reset_peaks` (Linux), else ever."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def reset_peaks(device: Any) -> None:
    """Reset the peak-RSS mark (Linux ``clear_refs``) and the CUDA peak-memory counter."""
    import torch

    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _max_peaks(peaks: list[tuple[float, float | None]]) -> tuple[float, float | None]:
    gpu = [g for _, g in peaks if g is not None]
    return max(p for p, _ in peaks), (max(gpu) if gpu else None)


def write_bundle(folder: Path, roi: list[int]) -> Path:
    """A random-weight full-size vista3d132 bundle in the released layout."""
    import torch
    from monai.networks.nets import vista3d132

    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(parents=True, exist_ok=True)
    config = {
        "imports": ["$import glob", "$import os", "$import scripts"],
        "input_channels": 1,
        "resample_spacing": [1.5, 1.5, 1.5],
        "sw_batch_size": 1,
        "patch_size": roi,
        "network_def": NETWORK_DEF,
        "inferer": {
            "_target_": "scripts.inferer.Vista3dInferer",
            "roi_size": "@patch_size",
            "overlap": 0.3,
        },
    }
    (folder / "configs" / "inference.json").write_text(json.dumps(config, indent=2))
    (folder / "configs" / "metadata.json").write_text(json.dumps({"version": "0.5.9-bench"}))
    torch.manual_seed(0)
    torch.save(vista3d132(in_channels=1).state_dict(), folder / "models" / "model.pt")
    return folder


def reference_call(
    image_path: Path, bundle: Path, roi: list[int], device: Any, label_prompt: list[int]
) -> Any:
    """One prompt the way the bundle's inference config runs it (everything rebuilt)."""
    import copy

    import torch
    from monai.apps.vista3d.transforms import VistaPostTransformd, VistaPreTransformd
    from monai.inferers import sliding_window_inference
    from monai.networks.nets import vista3d132
    from monai.transforms import (
        CastToTyped,
        Compose,
        CropForegroundd,
        EnsureChannelFirstd,
        EnsureTyped,
        Invertd,
        LoadImaged,
        Orientationd,
        ScaleIntensityRanged,
        Spacingd,
    )

    from medm3.experts.vista3d_labels import SUBCLASS

    network = vista3d132(in_channels=1).to(device)
    state = torch.load(bundle / "models" / "model.pt", map_location=device, weights_only=True)
    network.load_state_dict(state, strict=True)
    network.eval()
    pre = Compose(
        [
            LoadImaged(keys="image", image_only=True),
            EnsureChannelFirstd(keys="image"),
            EnsureTyped(keys="image", device=device, track_meta=True),
            Spacingd(keys="image", pixdim=[1.5, 1.5, 1.5], mode="bilinear"),
            CropForegroundd(keys="image", source_key="image", margin=10, allow_smaller=True),
            VistaPreTransformd(
                keys="image", subclass={str(k): list(v) for k, v in SUBCLASS.items()}
            ),
            ScaleIntensityRanged(
                keys="image",
                a_min=-963.8247715525971,
                a_max=1053.678477684517,
                b_min=0,
                b_max=1,
                clip=True,
            ),
            Orientationd(keys="image", axcodes="RAS"),
            CastToTyped(keys="image", dtype=torch.float32),
        ]
    )
    data = pre({"image": str(image_path), "label_prompt": list(label_prompt)})
    inputs = data["image"].unsqueeze(0)
    class_vector = torch.as_tensor(data["label_prompt"], device=device).unsqueeze(-1)
    amp = torch.autocast("cuda") if device.type == "cuda" else _Null()
    with torch.no_grad(), amp:
        pred = sliding_window_inference(
            inputs=inputs,
            roi_size=roi,
            sw_batch_size=1,
            predictor=network,
            overlap=0.3,
            mode="gaussian",
            sw_device=device,
            device=device,
            transpose=True,
            class_vector=class_vector,
            prompt_class=copy.deepcopy(class_vector),
            point_coords=None,
            point_labels=None,
        )
    with torch.no_grad():
        out = {"image": data["image"], "pred": pred[0].float(), "label_prompt": class_vector}
        out = VistaPostTransformd(keys="pred")(out)
        out = Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=True)(out)
        labels = torch.nan_to_num(out["pred"], nan=255).cpu()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return labels


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def timed(fn: Any, device: Any) -> tuple[float, Any]:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0, out


def gpu_peak_mb(device: Any) -> float | None:
    """Peak CUDA memory allocated since the last reset (MiB), None on CPU."""
    import torch

    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--roi", default="128", help="patch size: N or X,Y,Z (default 128)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per variant")
    parser.add_argument("--args", default="everything", help="VISTA3D argument")
    parser.add_argument("--image", type=Path, default=DATA / "ct" / "ct_abdomen_3mm.nii.gz")
    parser.add_argument("--bundle", type=Path, help="reuse/keep the random bundle here")
    parser.add_argument("--skip-reference", action="store_true", help="time medm3 only")
    opts = parser.parse_args(argv)

    import torch
    from monai.utils import set_determinism

    from medm3.experts.cache import ResultCache
    from medm3.experts.registry import get_expert
    from medm3.experts.vista3d import Vista3DExpert
    from medm3.imaging import load_image
    from medm3.utils.device import select_device

    if not opts.image.is_file():
        print(f"CT not found: {opts.image} (set MEDM3_TEST_DATA or --image)", file=sys.stderr)
        return 2
    roi = [int(v) for v in opts.roi.split(",")]
    roi = roi * 3 if len(roi) == 1 else roi
    device = select_device(opts.device)
    repeats = max(1, opts.repeats)
    set_determinism(seed=123)  # as the bundle's initialize; the same flags for every variant
    if device.type == "cuda":
        torch.zeros(1, device=device)  # CUDA context outside the timings
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"device: {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}"
    )

    with tempfile.TemporaryDirectory(prefix="bench_vista3d_") as tmp:
        bundle = opts.bundle or Path(tmp) / "vista3d"
        t0 = time.perf_counter()
        if not (bundle / "models" / "model.pt").is_file():
            write_bundle(bundle, roi)
        size = (bundle / "models" / "model.pt").stat().st_size / 2**20
        print(
            f"bundle: {bundle} ({size:.0f} MiB checkpoint), written in "
            f"{time.perf_counter() - t0:.1f} s; roi {roi}; args {opts.args!r}"
        )
        print(f"image: {opts.image}")

        expert = get_expert("vista3d", device=str(device), weights=bundle)
        assert isinstance(expert, Vista3DExpert)
        norm = expert.parse_args(opts.args)
        prompt = list(Vista3DExpert.prompt_ids(norm))
        rows: list[tuple[str, list[float], float, float | None]] = []
        cache = ResultCache(Path(tmp) / "results", disk=True)
        expert.result_cache = cache

        def ref_call() -> Any:
            return reference_call(opts.image, bundle, roi, device, prompt)

        def medm3_call(use_cache: bool) -> Any:
            return expert.run(load_image(opts.image, modality="CT"), norm, use_cache=use_cache)

        if not opts.skip_reference:  # process warm-up (kernels, allocator, page cache)
            reset_peaks(device)
            seconds, _ = timed(ref_call, device)
            rows.append(("reference, cold process", [seconds], peak_rss(), gpu_peak_mb(device)))
        reset_peaks(device)
        seconds, first = timed(lambda: medm3_call(True), device)
        assert first.info["cache"] == "miss", first.info.get("cache")
        rows.append(("medm3 first (setup+run)", [seconds], peak_rss(), gpu_peak_mb(device)))
        other_session = get_expert("vista3d", device=str(device), weights=bundle)
        shared = other_session is expert
        base = load_image(opts.image, modality="CT")
        new_image = dataclasses.replace(base, array=base.array + 1)  # unseen content: a miss
        reset_peaks(device)
        seconds, second = timed(lambda: other_session.run(new_image, norm, use_cache=True), device)
        assert second.info["cache"] == "miss", second.info.get("cache")
        rows.append(("medm3 second call, new image", [seconds], peak_rss(), gpu_peak_mb(device)))
        ref: list[float] = []
        warm: list[float] = []
        ref_peaks: list[tuple[float, float | None]] = []
        warm_peaks: list[tuple[float, float | None]] = []
        for _ in range(repeats):  # interleaved, so load changes hit both alike
            if not opts.skip_reference:
                reset_peaks(device)
                ref.append(timed(ref_call, device)[0])
                ref_peaks.append((peak_rss(), gpu_peak_mb(device)))
            reset_peaks(device)
            warm.append(timed(lambda: medm3_call(False), device)[0])
            warm_peaks.append((peak_rss(), gpu_peak_mb(device)))
        if ref:
            rows.append(("reference (per call)", ref, *_max_peaks(ref_peaks)))
        rows.append(("medm3 warm (no cache)", warm, *_max_peaks(warm_peaks)))
        hits = []
        reset_peaks(device)
        for _ in range(max(repeats, 5)):
            seconds, result = timed(lambda: medm3_call(True), device)
            assert result.info["cache"] == "hit"
            hits.append(seconds)
        rows.append(("medm3 cache hit (memory)", hits, peak_rss(), None))
        expert.result_cache = ResultCache(Path(tmp) / "results", disk=True)
        seconds, result = timed(lambda: medm3_call(True), device)
        assert result.info.get("cache_tier") == "disk", result.info
        rows.append(("medm3 cache hit (disk)", [seconds], peak_rss(), None))

        print()
        print(
            f"{'variant':28s} {'median s':>9s} {'min s':>8s} {'peak RSS MiB':>13s} {'GPU MiB':>8s}"
        )
        for label, times, rss, gpu in rows:
            gpu_text = f"{gpu:8.0f}" if gpu is not None else f"{'-':>8s}"
            print(
                f"{label:28s} {statistics.median(times):9.3f} {min(times):8.3f} "
                f"{rss:13.0f} {gpu_text}"
            )
        timings = first.timings
        print(
            "\nfirst call stages (s): "
            + ", ".join(f"{k} {v:.2f}" for k, v in timings.items() if k != "total")
        )
        found = len(first.label_names)
        print(
            f"structures found (random weights): {found}; label map {first.label_map.array.shape}"
        )
        print(
            f"second call on a new image (same instance from get_expert: {shared}): "
            f"setup {second.timings['setup'] * 1000:.2f} ms vs {timings['setup']:.2f} s in the "
            f"first call; run {second.timings['run']:.2f} s"
        )
        medians = {label: statistics.median(times) for label, times, _, _ in rows}
        warm_s = medians["medm3 warm (no cache)"]
        hit_s = medians["medm3 cache hit (memory)"]
        first_s = medians["medm3 first (setup+run)"]
        print()
        if "reference (per call)" in medians:
            ratio = medians["reference (per call)"] / warm_s
            print(
                f"warm vs reference: {ratio:.1f}x faster (goal >= 2x) "
                f"{'OK' if ratio >= 2 else 'BELOW GOAL'}"
            )
        ratio = first_s / hit_s
        print(
            f"cache hit vs first run: {ratio:.0f}x faster (goal >= 50x) "
            f"{'OK' if ratio >= 50 else 'BELOW GOAL'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
