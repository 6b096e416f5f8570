"""Builders for the VISTA3D expert tests (imported by ``test_vista3d.py``).

No real VISTA3D weights exist offline, so the tests write a random-weight
bundle in the released layout (``configs/inference.json`` with a
``network_def``, ``configs/metadata.json``, ``models/model.pt``) and load it
through the expert's real loading code. The tiny network is the VISTA3D
architecture (SegResNetDS2 encoder, class head, point head) with 8 filters
and three encoder levels: about 0.2 M parameters, ~1 s per 128x128x64 window
on two CPU cores.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medm3.imaging.image import MedicalImage

#: ``network_def`` of the tiny test network (a MONAI bundle component definition).
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

#: Patch size written into the tiny bundle (3 x 2 x 1 windows on the shared CT).
TINY_ROI = (128, 128, 64)


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
) -> Path:
    """Write a random-weight VISTA3D bundle in the released layout.

    The config mirrors the released ``inference.json`` keys the expert reads
    (``imports`` that cannot be imported here included, as in the release).

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

    Returns:
        ``folder``.
    """
    import torch

    from medm3.experts.vista3d import BundleSettings, build_network

    (folder / "configs").mkdir(parents=True, exist_ok=True)
    (folder / "models").mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "imports": ["$import glob", "$import os", "$import scripts", "$import numpy as np"],
        "bundle_root": "./",
        "input_channels": 1,
        "resample_spacing": [1.5, 1.5, 1.5],
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
        json.dumps({"version": version, "name": "VISTA3D (test)"}, indent=2)
    )
    torch.manual_seed(seed)
    settings = BundleSettings(folder=folder, config=doc if config else {})
    state = build_network(settings).state_dict()
    if module_prefix:
        state = {f"module.{k}": v for k, v in state.items()}
    torch.save({"model": state} if wrap else state, folder / "models" / "model.pt")
    return folder


def ct_image(path: Path) -> MedicalImage:
    """The shared CT as a :class:`MedicalImage` (via ``load_image``, else nibabel)."""
    try:
        from medm3.imaging.io import load_image

        return load_image(path, modality="CT")
    except ImportError:  # pragma: no cover - reader not available
        import nibabel as nib

        nii = nib.as_closest_canonical(nib.load(str(path)))
        return MedicalImage(
            array=np.asarray(nii.dataobj),
            spacing=tuple(float(z) for z in nii.header.get_zooms()[:3]),
            affine=nii.affine,
            modality="CT",
            modality_source="caller",
            source=str(path),
        )


def box_phantom(
    shape: Sequence[int] = (40, 50, 20),
    spacing: Sequence[float] = (3.0, 1.5, 3.0),
    origin: Sequence[float] = (-60.0, 25.0, 110.0),
) -> tuple[MedicalImage, np.ndarray]:
    """A synthetic CT: air with a 200 HU box ("liver") and a 1000 HU box ("spleen").

    Args:
        shape: Volume shape (X, Y, Z).
        spacing: Voxel size (mm); multiples of 1.5 mm keep the resampling exact.
        origin: World position of voxel (0, 0, 0).

    Returns:
        ``(image, expected)`` where ``expected`` holds 1 in the 200 HU box and
        3 in the 1000 HU box (VISTA3D ids of liver and spleen), else 0.
    """
    array = np.full(tuple(shape), -1000, dtype=np.int16)
    expected = np.zeros(tuple(shape), dtype=np.uint8)
    array[8:20, 12:34, 4:12] = 200
    expected[8:20, 12:34, 4:12] = 1
    array[25:31, 30:40, 9:15] = 1000
    expected[25:31, 30:40, 9:15] = 3
    affine = np.diag([*[float(s) for s in spacing], 1.0])
    affine[:3, 3] = origin
    image = MedicalImage(
        array=array,
        spacing=tuple(float(s) for s in spacing),
        affine=affine,
        modality="CT",
        modality_source="caller",
        source="phantom",
    )
    return image, expected


class IntensityNetwork:
    """Stand-in for the VISTA3D forward: logits that depend only on the input intensity.

    Class prompts: class 1 (liver) is positive where the scaled intensity is in
    (0.5, 0.75) (200 HU -> 0.577), class 3 (spleen) where it is above 0.9
    (1000 HU -> 0.98), every other class is negative. Point prompts: only the
    voxel nearest to each positive point is positive. Output ``[1, B, H, W, D]``
    (``transpose=True``), so sliding-window blending, the label-id mapping, the
    point mapping and the inversion can be checked voxel by voxel. Records the
    keyword arguments of every call in :attr:`calls`.
    """

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, input_images: Any, **kwargs: Any) -> Any:
        import torch

        self.calls.append({"shape": tuple(input_images.shape), **kwargs})
        cv = kwargs.get("class_vector")
        points = kwargs.get("point_coords")
        x = input_images[:, :1].float()
        if points is not None:
            start = [s.start for s in kwargs["patch_coords"][0][-3:]]
            out = torch.full_like(x, -5.0)
            for p, lab in zip(points[0].tolist(), kwargs["point_labels"][0].tolist(), strict=True):
                i, j, k = (round(c - s0) for c, s0 in zip(p, start, strict=True))
                inside = all(0 <= v < n for v, n in zip((i, j, k), x.shape[-3:], strict=True))
                if lab in (1, 3) and inside:
                    out[0, 0, i, j, k] = 5.0
            return out
        channels = []
        for cid in [int(i) for i in cv.flatten()]:
            if cid == 1:
                on = (x > 0.5) & (x < 0.75)
            elif cid == 3:
                on = x > 0.9
            else:
                on = torch.zeros_like(x, dtype=torch.bool)
            channels.append(torch.where(on, 5.0, -5.0))
        return torch.cat(channels, dim=1)
