"""Random-weight expert weights in the released file layouts (tests, benchmarks, ``m3 demo``).

No real expert weights are needed to exercise the experts' loading and
inference code: these builders write random-weight models of the released
architectures in the layouts the experts read, so that the normal loading path
(``weights=`` / ``--weights NAME=DIR``) runs unchanged:

- :func:`write_vista3d_bundle`: a MONAI ``vista3d`` bundle (``configs/inference.json``
  with a ``network_def``, ``configs/metadata.json``, ``models/model.pt``); by
  default a tiny VISTA3D (SegResNetDS2 encoder, class and point heads, 8
  filters, ~0.2 M parameters, about 1 s per 128x128x64 window on 2 CPU cores).
- :func:`write_brats_bundle`: a MONAI ``brats_mri_segmentation`` bundle
  (SegResNet, 4 inputs, 3 outputs; 8 filters by default).
- :func:`write_random_xrv_weights`: a torchxrayvision cache folder with all
  eight ensemble checkpoints (full DenseNet-121 / ResNet-50 architectures,
  ~300 MB in all) under the file names torchxrayvision derives from its URLs.
- :func:`build_tiny_experts`: several of the above in one folder, returning
  the ``name -> folder`` mapping ``--weights`` takes.

The answers of random weights are meaningless; these exist to test code paths.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "BRATS_SHAPE",
    "TINY_NETWORK_DEF",
    "TINY_ROI",
    "build_tiny_experts",
    "write_brats_bundle",
    "write_random_xrv_weights",
    "write_vista3d_bundle",
]

#: ``network_def`` of the tiny VISTA3D (a MONAI bundle component definition).
TINY_NETWORK_DEF: dict[str, Any] = {
    "_target_": "monai.networks.nets.vista3d.VISTA3D",
    "image_encoder": {
        "_target_": "monai.networks.nets.SegResNetDS2",
        "in_channels": "@input_channels",
        "blocks_down": [1, 1, 1],
        "norm": "instance",
        "out_channels": 8,
        "init_filters": 8,
        "dsdepth": 1,
    },
    "class_head": {
        "_target_": "monai.networks.nets.vista3d.ClassMappingClassify",
        "n_classes": 512,
        "feature_size": 8,
        "use_mlp": True,
    },
    "point_head": {
        "_target_": "monai.networks.nets.vista3d.PointMappingSAM",
        "feature_size": 8,
        "n_classes": 512,
        "last_supported": 132,
    },
}

#: Patch size written into the tiny VISTA3D bundle.
TINY_ROI = (128, 128, 64)

#: Default BraTS ROI of the tiny bundle (divisible by 8, the SegResNet stride).
BRATS_SHAPE = (64, 64, 48)


def write_vista3d_bundle(
    folder: Path,
    *,
    network_def: Any = None,
    roi: Sequence[int] | None = TINY_ROI,
    overlap: float | None = 0.3,
    version: str = "0.5.9-test",
    wrap: bool = False,
    module_prefix: bool = False,
    config: bool = True,
    seed: int = 0,
    spacing: Sequence[float] = (1.5, 1.5, 1.5),
) -> Path:
    """Write a random-weight VISTA3D bundle in the released layout.

    The config has the keys of the released ``inference.json`` the expert reads
    (including ``imports`` that cannot be imported outside the bundle, as in
    the release).

    Args:
        folder: Bundle folder to create.
        network_def: ``network_def`` (default :data:`TINY_NETWORK_DEF`); a string
            such as ``"$monai.networks.nets.vista3d132(in_channels=@input_channels)"``
            for the released expression form.
        roi: ``patch_size`` in the config (None: not written, the default 128^3 applies).
        overlap: ``inferer.overlap`` (None: no inferer section).
        version: ``configs/metadata.json`` version.
        wrap: Save ``{"model": state_dict}`` instead of the raw state dict.
        module_prefix: Prefix every key with ``module.`` (a DDP checkpoint).
        config: Whether to write ``configs/inference.json`` at all (without it the
            expert builds the full-size ``vista3d132``).
        seed: Random seed of the weights.
        spacing: ``resample_spacing`` in the config (the release: 1.5 mm).

    Returns:
        ``folder``.
    """
    import torch

    from medm3.experts.vista3d import BundleSettings, build_network

    folder = Path(folder)
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "imports": ["$import glob", "$import os", "$import scripts", "$import numpy as np"],
        "bundle_root": "./",
        "input_channels": 1,
        "resample_spacing": [float(v) for v in spacing],
        "sw_batch_size": 1,
        "network_def": TINY_NETWORK_DEF if network_def is None else network_def,
        "network": "$@network_def.to(@device)",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
    }
    if roi is not None:
        doc["patch_size"] = list(roi)
    if overlap is not None:
        doc["inferer"] = {
            "_target_": "scripts.inferer.Vista3dInferer",
            "roi_size": "@patch_size",
            "overlap": overlap,
            "sw_batch_size": "@sw_batch_size",
            "use_point_window": True,
        }
    if config:
        (folder / "configs" / "inference.json").write_text(json.dumps(doc, indent=2))
    (folder / "configs" / "metadata.json").write_text(
        json.dumps({"version": version, "name": "VISTA3D (random weights, test)"}, indent=2)
    )
    torch.manual_seed(seed)
    settings = BundleSettings(folder=folder, config=doc if config else {})
    state = build_network(settings).state_dict()
    if module_prefix:
        state = {f"module.{k}": v for k, v in state.items()}
    torch.save({"model": state} if wrap else state, folder / "models" / "model.pt")
    return folder


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
    """Write a random-weight BraTS SegResNet bundle in the released layout.

    Args:
        folder: Bundle folder to create.
        init_filters: ``network_def.init_filters`` (multiple of 8; the release uses 16).
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

    folder = Path(folder)
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
    """Write random-weight files for all CXR ensemble models under torchxrayvision's names.

    DenseNets are pickled whole (torchxrayvision loads ``torch.load(f).state_dict()``),
    the ResNet-50 as the torchvision state dict torchxrayvision expects.

    Args:
        folder: Cache folder to fill.
        seed: Base torch seed (each model gets its own).

    Returns:
        ``folder``.
    """
    import torch
    import torchvision

    from medm3.experts.catalogue import CXR_MODELS, xrv_filename
    from medm3.experts.xrv import import_xrv

    xrv = import_xrv()
    folder = Path(folder)
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


_BUILDERS = {
    "vista3d": write_vista3d_bundle,
    "brats": write_brats_bundle,
    "cxr": write_random_xrv_weights,
}


def build_tiny_experts(root: Path, names: Iterable[str] = ("vista3d", "brats")) -> dict[str, Path]:
    """Write random-weight weights for several experts, one folder each, under ``root``.

    Args:
        root: Parent folder (``root/<name>/`` per expert).
        names: Experts to build: ``vista3d``, ``brats``, ``cxr`` (the CXR
            ensemble is full-size, ~300 MB, so it is not built by default).

    Returns:
        ``{name: folder}``, what ``AgentConfig.weights`` and ``--weights NAME=DIR`` take.

    Raises:
        ValueError: Unknown expert name.
    """
    out: dict[str, Path] = {}
    for name in names:
        if name not in _BUILDERS:
            raise ValueError(f"no random-weight builder for {name!r}; known: {sorted(_BUILDERS)}")
        out[name] = _BUILDERS[name](Path(root) / name)
    return out
