"""VISTA3D bundle settings, network and preprocessing (see :mod:`medm3.experts.vista3d`).

The bundle is read with :mod:`medm3.experts.bundle`; this module adds what is
VISTA3D's own: its default network (``vista3d132``), patch size, overlap,
resampling spacing and intensity window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medm3.experts import bundle

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: Output spacing of the bundle's ``Spacingd`` (mm).
DEFAULT_SPACING: tuple[float, float, float] = (1.5, 1.5, 1.5)
#: Sliding-window patch size of the released bundle.
DEFAULT_ROI: tuple[int, int, int] = (128, 128, 128)
#: Sliding-window overlap of the released bundle.
DEFAULT_OVERLAP = 0.3
#: Intensity window (HU) mapped to 0..1 by the bundle's ``ScaleIntensityRanged``.
HU_RANGE: tuple[float, float] = (-963.8247715525971, 1053.678477684517)
#: Seed of the bundle's ``set_determinism``.
SEED = 123
#: Label value the bundle writes where nothing was predicted (NaN after point windows).
NAN_LABEL = 255


@dataclass(frozen=True)
class BundleSettings:
    """Facts read from a VISTA3D bundle folder.

    Attributes:
        folder: The bundle folder.
        config: ``configs/inference.json`` (empty when absent).
        version: ``configs/metadata.json`` version (``""`` when absent).
        roi_size: Sliding-window patch size.
        overlap: Sliding-window overlap.
        spacing: Resampling spacing (mm).
    """

    folder: Path
    config: dict[str, Any] = field(default_factory=dict)
    version: str = ""
    roi_size: tuple[int, int, int] = DEFAULT_ROI
    overlap: float = DEFAULT_OVERLAP
    spacing: tuple[float, float, float] = DEFAULT_SPACING


def read_bundle(folder: str | Path) -> BundleSettings:
    """Read a bundle's inference config and metadata (see :mod:`medm3.experts.bundle`).

    ``patch_size`` (or ``inferer.roi_size``), ``inferer.overlap`` (or
    ``overlap``) and ``resample_spacing`` are taken from the config when they
    are literal values; otherwise the released bundle's values are used.

    Args:
        folder: Bundle folder (``configs/``, ``models/``).

    Returns:
        The settings.

    Raises:
        UnusableWeightsError: A config file exists but is not valid JSON.
    """
    root = Path(folder)
    config = bundle.read_config(root)
    window = bundle.window_settings(config, roi=DEFAULT_ROI, overlap=DEFAULT_OVERLAP)
    spacing = bundle._positive_triple(config.get("resample_spacing"), float)
    return BundleSettings(
        folder=root,
        config=config,
        version=bundle.read_version(root),
        roi_size=window.roi_size,  # type: ignore[arg-type]
        overlap=window.overlap,
        spacing=spacing or DEFAULT_SPACING,  # type: ignore[arg-type]
    )


def _default_network() -> torch.nn.Module:
    from monai.networks.nets import vista3d132

    return vista3d132(in_channels=1)


def build_network(settings: BundleSettings, *, skip_init: bool = False) -> torch.nn.Module:
    """Build the VISTA3D network described by a bundle (no weights loaded).

    Uses the config's ``network_def`` (see :func:`medm3.experts.bundle.build_network`),
    else ``monai.networks.nets.vista3d132(in_channels=1)``.

    Args:
        settings: Output of :func:`read_bundle`.
        skip_init: Build the parameters on the ``meta`` device.

    Raises:
        UnusableWeightsError: ``network_def`` cannot be built or is not a ``torch.nn.Module``.
        BundleCodeError: ``network_def`` holds code other than a known network
            constructor and the bundle is not trusted (``--trust-bundle-code``).
    """
    return bundle.build_network(
        settings.folder, settings.config, _default_network, skip_init=skip_init
    )


_HOW_TO_GET = (
    "expected models/model.pt in the bundle folder; run `m3 experts download vista3d` "
    "or point --weights at a bundle folder"
)


def load_state_dict(path: str | Path) -> dict[str, Any]:
    """Read a VISTA3D checkpoint as a plain state dict (see :func:`bundle.load_state_dict`).

    Raises:
        WeightsNotFoundError: The file does not exist.
        UnusableWeightsError: The file is not a readable checkpoint or holds no state dict.
    """
    return bundle.load_state_dict(Path(path), expert="VISTA3D", how_to_get=_HOW_TO_GET)


def load_network(settings: BundleSettings, device: Any = "cpu") -> torch.nn.Module:
    """Build the bundle's network and load ``models/model.pt`` into it (strict).

    Returns:
        The network on ``device``, in eval mode, float32.

    Raises:
        WeightsNotFoundError: The checkpoint is missing.
        UnusableWeightsError: The checkpoint is unreadable or does not match the network.
    """
    return bundle.load_network(
        settings.folder,
        lambda skip_init: build_network(settings, skip_init=skip_init),
        device,
        expert="VISTA3D",
        how_to_get=_HOW_TO_GET,
    )


def _preprocessing(spacing: Sequence[float]) -> Any:
    """The bundle's spatial/intensity preprocessing as an invertible ``Compose``."""
    import torch
    from monai.transforms import (
        CastToTyped,
        Compose,
        CropForegroundd,
        Orientationd,
        ScaleIntensityRanged,
        Spacingd,
    )

    return Compose(
        [
            Spacingd(keys="image", pixdim=tuple(spacing), mode="bilinear"),
            CropForegroundd(keys="image", source_key="image", margin=10, allow_smaller=True),
            ScaleIntensityRanged(
                keys="image", a_min=HU_RANGE[0], a_max=HU_RANGE[1], b_min=0, b_max=1, clip=True
            ),
            Orientationd(keys="image", axcodes="RAS"),
            CastToTyped(keys="image", dtype=torch.float32),
        ]
    )
