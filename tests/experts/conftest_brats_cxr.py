"""Builders and fixtures for the BraTS and CXR expert tests (imported by those tests).

No real weights exist offline, so the tests build random-weight models in the
released file layouts and load them through the experts' real loading code:

* a tiny ``brats_mri_segmentation`` bundle (``configs/inference.json`` with a
  SegResNet ``network_def``, ``models/model.pt``);
* a torchxrayvision cache folder holding all eight ensemble models (full
  DenseNet-121 / ResNet-50 architectures) under the file names xrv derives from
  its download URLs, so ``xrv.models.DenseNet(weights=..., cache_dir=...)``
  finds them instead of downloading.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medm3.imaging.image import MedicalImage

#: Shape of the synthetic BraTS volumes (divisible by 8, the SegResNet stride).
BRATS_SHAPE = (64, 64, 48)


# --------------------------------------------------------------------- BraTS
def write_brats_bundle(
    folder: Path,
    *,
    init_filters: int = 8,
    roi: Sequence[int] | None = BRATS_SHAPE,
    config: bool = True,
    wrap: bool = False,
    weights_filters: int | None = None,
    seed: int = 0,
) -> Path:
    """Write a random-weight SegResNet bundle in the released layout.

    Args:
        folder: Bundle folder to create.
        init_filters: ``network_def.init_filters`` (multiple of 8).
        roi: ``inferer.roi_size`` in the config (None: no inferer section).
        config: Whether to write ``configs/inference.json`` at all.
        wrap: Save ``{"model": state_dict}`` instead of the raw state dict.
        weights_filters: Build the saved weights with another width (mismatch tests).
        seed: Torch seed for the random weights.

    Returns:
        ``folder``.
    """
    import torch
    from monai.networks.nets import SegResNet

    net_def: dict[str, Any] = {
        "_target_": "SegResNet",
        "blocks_down": [1, 2, 2, 4],
        "blocks_up": [1, 1, 1],
        "init_filters": init_filters,
        "in_channels": 4,
        "out_channels": 3,
        "dropout_prob": 0.2,
    }
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(parents=True, exist_ok=True)
    if config:
        cfg: dict[str, Any] = {
            "bundle_root": ".",
            "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
            "network_def": net_def,
            "network": "$@network_def.to(@device)",
        }
        if roi is not None:
            cfg["inferer"] = {
                "_target_": "SlidingWindowInferer",
                "roi_size": list(roi),
                "sw_batch_size": 1,
                "overlap": 0.5,
            }
        (folder / "configs" / "inference.json").write_text(json.dumps(cfg, indent=2))
        (folder / "configs" / "metadata.json").write_text(json.dumps({"version": "0.0.1-test"}))
    torch.manual_seed(seed)
    kwargs = {k: v for k, v in net_def.items() if not k.startswith("_")}
    kwargs["init_filters"] = weights_filters or init_filters
    state = SegResNet(**kwargs).state_dict()
    torch.save({"model": state} if wrap else state, folder / "models" / "model.pt")
    return folder


def mr_volume(
    array: np.ndarray,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    affine: np.ndarray | None = None,
    modality: str = "MR",
    source: str = "synthetic",
) -> MedicalImage:
    """A synthetic RAS+ volume."""
    if affine is None:
        affine = np.diag([*map(float, spacing), 1.0])
    return MedicalImage(
        array=array,
        spacing=tuple(float(s) for s in spacing),
        affine=np.asarray(affine, dtype=np.float64),
        modality=modality,
        modality_source="caller",
        source=source,
    )


def box(shape: Sequence[int], lo: Sequence[int], hi: Sequence[int]) -> np.ndarray:
    """Boolean mask of the box ``lo <= index < hi``."""
    mask = np.zeros(tuple(shape), dtype=bool)
    mask[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = True
    return mask


def support_volume(mask: np.ndarray, seed: int) -> np.ndarray:
    """Random positive values inside ``mask``, exactly 0 outside.

    NormalizeIntensity(nonzero=True) keeps zeros at zero, so the support of
    each normalised channel still identifies which input it came from.
    """
    rng = np.random.default_rng(seed)
    return np.where(mask, rng.uniform(1.0, 2.0, mask.shape), 0.0).astype(np.float32)


# ----------------------------------------------------------------------- CXR
def _calibrate_batchnorm(net: Any, size: int, seed: int) -> None:
    """Give random BatchNorm layers sensible running stats (one train-mode pass).

    Without it a random ResNet/DenseNet in eval mode amplifies the [-1024, 1024]
    input into saturated logits, and every probability is exactly 0 or 1.
    """
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(2, 1, 8, 8, generator=gen)
    x = F.interpolate(coarse, size=(size, size), mode="bilinear") * 2048.0 - 1024.0
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: stats of this one batch
    net.train()
    with torch.no_grad():
        net(x)
    net.eval()


def write_random_xrv_weights(folder: Path, seed: int = 0) -> Path:
    """Write random-weight files for all :data:`CXR_MODELS` under xrv's file names.

    DenseNets are pickled whole (xrv loads ``torch.load(f).state_dict()``),
    the ResNet-50 as the torchvision state dict xrv expects.

    Args:
        folder: Cache folder to fill.
        seed: Base torch seed (each model gets its own).

    Returns:
        ``folder``.
    """
    import torch
    import torchvision

    from medm3.experts.catalogue import CXR_MODELS, xrv_filename
    from medm3.experts.cxr import import_xrv

    xrv = import_xrv()
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    dense = xrv.models.DenseNet(num_classes=18)  # one body; each model its own classifier
    _calibrate_batchnorm(dense, 64, seed)
    for i, name in enumerate(CXR_MODELS):
        torch.manual_seed(seed + i)
        path = folder / xrv_filename(name)
        if name.startswith("resnet"):
            net = torchvision.models.resnet50(num_classes=18, weights=None)
            net.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
            _calibrate_batchnorm(net, 128, seed + i)
            torch.save(net.state_dict(), path)
        else:
            torch.nn.init.normal_(dense.classifier.weight, std=0.01)
            torch.nn.init.normal_(dense.classifier.bias, std=0.5)
            torch.save(dense, path)
    return folder


@dataclass
class ConstructorSpy:
    """Counts xrv model constructions while installed (see :func:`spy_xrv_constructors`)."""

    counts: dict[str, int] = field(default_factory=lambda: {"DenseNet": 0, "ResNet": 0})


def spy_xrv_constructors(monkeypatch: pytest.MonkeyPatch) -> ConstructorSpy:
    """Count ``xrv.models.DenseNet`` / ``ResNet`` constructions while installed.

    The classes' ``__init__`` are wrapped in place (a subclass would recurse
    through xrv's ``super(DenseNet, self)``, and pickled DenseNets must still
    find their class by name).
    """
    from medm3.experts.cxr import import_xrv

    xrv = import_xrv()
    spy = ConstructorSpy()
    for name in ("DenseNet", "ResNet"):
        cls = getattr(xrv.models, name)
        original = cls.__init__

        def counting_init(
            self: Any, *args: Any, _name: str = name, _orig: Any = original, **kwargs: Any
        ) -> None:
            spy.counts[_name] += 1
            _orig(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", counting_init)
    return spy


@dataclass
class LoadedCXR:
    """The session's CXR expert and how many models its setup constructed."""

    expert: Any
    weights: Path
    constructed: dict[str, int]


@pytest.fixture(scope="session")
def cxr_weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A torchxrayvision cache folder with random weights for all eight models."""
    return write_random_xrv_weights(tmp_path_factory.mktemp("xrv_cache"))


@pytest.fixture(scope="session")
def cxr_loaded(cxr_weights_dir: Path) -> Iterator[LoadedCXR]:
    """One CXR expert for the session, loaded through the real ``weights=`` path."""
    from medm3.experts.cxr import CXRExpert

    expert = CXRExpert(device="cpu", weights=cxr_weights_dir)
    with pytest.MonkeyPatch.context() as mp:
        spy = spy_xrv_constructors(mp)
        expert.setup()
    yield LoadedCXR(expert, cxr_weights_dir, dict(spy.counts))
