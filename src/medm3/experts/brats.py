"""BraTS expert: brain-tumour sub-region segmentation from four MRI sequences.

Runs the MONAI model-zoo bundle ``brats_mri_segmentation`` (SegResNet trained
on BraTS 2018) the way the bundle's inference config does:

* **Inputs** are named, never taken by position: ``t1ce``, ``t1``, ``t2``,
  ``flair`` (the reference demo fed them in the wrong order). They are stacked
  in the bundle's channel order T1ce, T1, T2, FLAIR (:data:`CHANNEL_ORDER`).
  All four must lie on one grid (same shape and affine): the expert does not
  register or resample (co-registered, skull-stripped ~1 mm data, as in BraTS).
* **Preprocessing**: ``NormalizeIntensity(nonzero=True, channel_wise=True)``.
  Arrays are used in medm3's RAS+ voxel order; the network was trained with
  random flips on every axis, so the orientation convention does not matter.
* **Inference**: sliding window, roi ``240 x 240 x 160`` and overlap ``0.5``
  (both read from ``configs/inference.json`` ``inferer`` when defined), AMP
  (bf16/fp16 autocast) on CUDA, fp32 on CPU.
* **Postprocessing**: sigmoid, threshold 0.5; output channels are TC, WT, ET;
  label map 4 where ET, else 1 where TC, else 2 where WT, else 0 (BraTS labels:
  1 necrotic / non-enhancing core, 2 oedema, 4 enhancing tumour).

Weights: a bundle folder (``--weights`` or the catalogue cache) holding
``models/model.pt`` (a raw state dict or ``{"model": state_dict}``, loaded
strictly). The network is built from ``configs/inference.json``
``network_def`` when present, else the bundle's SegResNet (:data:`DEFAULT_NETWORK`).

The result text is :func:`medm3.prompts.brats_text` exactly (what the released
VILA-M3 checkpoints were trained on); tumour volumes in mL go to
``measurements`` (TC, WT, ET).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from medm3 import prompts
from medm3.experts import bundle
from medm3.experts.base import (
    Expert,
    ExpertError,
    ExpertResult,
    Overlay,
    RunContext,
    label_map_metadata,
)
from medm3.imaging.label_tables.expert_labels import BRATS_LABELS as LABEL_NAMES  # re-exported

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from medm3.imaging.image import MedicalImage

#: Input names, in the bundle's channel order (T1ce, T1, T2, FLAIR).
CHANNEL_ORDER: tuple[str, ...] = ("t1ce", "t1", "t2", "flair")


#: Network of the released bundle, used when ``configs/inference.json`` has no ``network_def``.
DEFAULT_NETWORK: dict[str, Any] = {
    "blocks_down": [1, 2, 2, 4],
    "blocks_up": [1, 1, 1],
    "init_filters": 16,
    "in_channels": 4,
    "out_channels": 3,
    "dropout_prob": 0.2,
}

#: Sliding-window roi when the bundle config does not define one.
DEFAULT_ROI: tuple[int, int, int] = (240, 240, 160)
#: Sliding-window overlap when the bundle config does not define one.
DEFAULT_OVERLAP = 0.5
#: Probability threshold applied after the sigmoid.
THRESHOLD = 0.5
#: Largest affine difference (mm) tolerated between the four inputs.
GRID_ATOL_MM = 1e-2

#: Network output channels -> (abbreviation, name, label values forming the region).
REGIONS: tuple[tuple[str, str, tuple[int, ...]], ...] = (
    ("TC", "tumor core", (1, 4)),
    ("WT", "whole tumor", (1, 2, 4)),
    ("ET", "enhancing tumor", (4,)),
)

#: Inputs the overlay may be drawn on (``context.options["overlay_on"]``); the first is
#: the default: T1ce, the sequence the reference (and the agent) draws BraTS labels on.
OVERLAY_INPUTS: tuple[str, ...] = ("t1ce", "flair", "t1", "t2")
#: Tie-break of the default overlay slice among equal tumour areas: more tumour core,
#: then more enhancing tumour (see :func:`medm3.experts.views.overlay_slice`).
TIEBREAK: tuple[tuple[int, ...], ...] = ((1, 4), (4,))


def regions_to_labels(regions: np.ndarray) -> np.ndarray:
    """Turn the thresholded TC / WT / ET channels into a BraTS label map.

    Args:
        regions: Boolean array ``(3, X, Y, Z)``: channels TC, WT, ET.

    Returns:
        ``uint8`` array ``(X, Y, Z)``: 4 where ET, else 1 where TC, else 2
        where WT, else 0.
    """
    regions = np.asarray(regions, dtype=bool)
    if regions.shape[0] != 3:
        raise ValueError(f"expected 3 channels (TC, WT, ET), got {regions.shape[0]}")
    tc, wt, et = regions[0], regions[1], regions[2]
    labels = np.zeros(regions.shape[1:], dtype=np.uint8)
    labels[wt] = 2
    labels[tc] = 1
    labels[et] = 4
    return labels


def tumour_volumes(labels: np.ndarray, voxel_volume_mm3: float) -> list[dict[str, Any]]:
    """Volumes of the tumour core, whole tumour and enhancing tumour.

    Args:
        labels: BraTS label map (values 0, 1, 2, 4).
        voxel_volume_mm3: Volume of one voxel in mm^3.

    Returns:
        One dict per region (TC, WT, ET) with ``name``, ``abbreviation``,
        ``labels``, ``voxels`` and ``volume_ml``.
    """
    out = []
    for abbrev, name, values in REGIONS:
        voxels = int(np.isin(labels, values).sum())
        out.append(
            {
                "name": name,
                "abbreviation": abbrev,
                "labels": list(values),
                "voxels": voxels,
                "volume_ml": round(voxels * float(voxel_volume_mm3) / 1000.0, 3),
            }
        )
    return out


def check_grid(named: Mapping[str, MedicalImage]) -> None:
    """Check that the four sequences are single-channel volumes on one grid.

    Args:
        named: Input name -> image, for all of :data:`CHANNEL_ORDER`.

    Raises:
        ExpertError: A 2D or multi-channel input, or a shape / affine that
            differs from the T1ce image's (the message names the input).
    """
    for key in CHANNEL_ORDER:
        image = named[key]
        if not image.is_volume:
            raise ExpertError(f"BRATS needs 3D MRI volumes, but {key} ({image.source}) is 2D")
        if image.channels != 1:
            raise ExpertError(
                f"BRATS needs one single-channel volume per sequence, but {key} "
                f"({image.source}) has {image.channels} channels; pass t1ce, t1, t2 and "
                "flair as separate named inputs"
            )
    ref_key = CHANNEL_ORDER[0]
    ref = named[ref_key]
    for key in CHANNEL_ORDER[1:]:
        image = named[key]
        if image.spatial_shape != ref.spatial_shape:
            raise ExpertError(
                f"BRATS inputs must share one grid: {key} has shape {image.spatial_shape} "
                f"but {ref_key} has {ref.spatial_shape} (co-register and resample them first)"
            )
        if not np.allclose(image.affine, ref.affine, rtol=0.0, atol=GRID_ATOL_MM):
            diff = float(np.max(np.abs(np.asarray(image.affine) - np.asarray(ref.affine))))
            raise ExpertError(
                f"BRATS inputs must share one grid: the affine of {key} differs from "
                f"{ref_key}'s by up to {diff:.3g} mm (co-register and resample them first)"
            )


def read_inference_config(folder: Path) -> dict[str, Any]:
    """The bundle's ``configs/inference.json`` (``{}`` when absent).

    Raises:
        UnusableWeightsError: The file exists but is not valid JSON (exit 2, naming it).
    """
    return bundle.read_config(Path(folder))


def _default_network() -> torch.nn.Module:
    from monai.networks import nets

    return nets.SegResNet(**DEFAULT_NETWORK)


def build_network(config: Mapping[str, Any], folder: Path | None = None) -> torch.nn.Module:
    """Build the SegResNet described by the bundle config (see :func:`bundle.build_network`).

    Args:
        config: Parsed ``configs/inference.json`` (may be empty: :data:`DEFAULT_NETWORK`).
        folder: The bundle folder (named in errors; ``bundle_root`` of expressions).

    Returns:
        The (randomly initialised) network.
    """
    return bundle.build_network(Path(folder or "."), config, _default_network)


class BratsExpert(Expert):
    """Brain-tumour segmentation (TC / WT / ET) from T1ce, T1, T2 and FLAIR MRI.

    Inputs must be given by name (``{"t1ce": ..., "t1": ..., "t2": ...,
    "flair": ...}``). ``context.options["overlay_on"]`` picks the sequence the
    overlay is drawn on (default ``"t1ce"``, as the reference and the agent draw it;
    saved with a legend of ``id: name``). See the module docstring for
    the exact pipeline.

    Args:
        device: ``"cuda"``, ``"cpu"``, ``"cuda:N"`` or ``None`` (automatic).
        weights: A ``brats_mri_segmentation`` bundle folder overriding the cache.
    """

    name: ClassVar[str] = "brats"
    trigger: ClassVar[str] = "BRATS"
    card_modality: ClassVar[str] = "MRI"
    modalities: ClassVar[tuple[str, ...]] = ("MR",)
    dimensions: ClassVar[tuple[int, ...]] = (3,)
    task: ClassVar[str] = "segmentation"
    overview: ClassVar[str] = (
        "A pre-trained model for volumetric (3D) segmentation of brain tumor subregions "
        "from multimodal MRIs based on BraTS 2018 data"
    )
    accuracy: ClassVar[str] = (
        "Tumor core (TC): 0.8559 - Whole tumor (WT): 0.9026 - Enhancing tumor (ET): 0.7905 "
        "- Average: 0.8518"
    )
    valid_args: ClassVar[tuple[str, ...]] = ()
    inputs: ClassVar[tuple[str, ...]] = CHANNEL_ORDER
    weights_name: ClassVar[str | None] = "brats"

    def __init__(self, *, device: str | None = None, weights: str | Path | None = None) -> None:
        super().__init__(device=device, weights=weights)
        self._net: Any = None
        self._device: Any = None
        self._roi: tuple[int, ...] = DEFAULT_ROI
        self._overlap = DEFAULT_OVERLAP
        self._sw_batch = 1
        self._amp: Any = None  # the autocast dtype of the last run (None: fp32)
        self._bundle = bundle.BundleRef("brats", weights)

    # ---------------------------------------------------------------- setup
    def weights_folder(self) -> Path:
        """The bundle folder in use (resolved once from ``weights`` or the cache).

        Raises:
            WeightsNotFoundError: ``models/model.pt`` is missing.
        """
        return self._bundle.folder

    def weights_id(self) -> str:
        """Identifier of the exact weights (for result-cache keys)."""
        return self._bundle.version

    def _setup(self) -> None:
        from medm3.utils.device import select_device

        folder = self.weights_folder()
        config = read_inference_config(folder)
        window = bundle.window_settings(config, roi=DEFAULT_ROI, overlap=DEFAULT_OVERLAP)
        device = select_device(self.device_preference)
        self._net = bundle.load_network(
            folder,
            lambda skip_init: bundle.build_network(
                folder, config, _default_network, skip_init=skip_init
            ),
            device,
            expert="BraTS",
            how_to_get="run `m3 experts download brats` or point --weights at a bundle folder",
        )
        self._roi, self._overlap, self._sw_batch = (
            window.roi_size,
            window.overlap,
            window.sw_batch_size,
        )
        self._device = device

    # ------------------------------------------------------------------ run
    def check_inputs(
        self, images: MedicalImage | Sequence[MedicalImage] | Mapping[str, MedicalImage]
    ) -> dict[str, MedicalImage]:
        """Check names and modality (see :meth:`Expert.check_inputs`) and the shared grid.

        Raises:
            ExpertError: Missing, unnamed or unknown inputs, a non-MR image, a
                2D / multi-channel input, or inputs on different grids.
        """
        named = super().check_inputs(images)
        check_grid(named)
        return named

    def segment(self, named: Mapping[str, MedicalImage]) -> np.ndarray:
        """Run the network and return the BraTS label map (no checks, no rendering).

        Args:
            named: The four sequences by name, already checked.

        Returns:
            ``uint8`` label map on the input grid (values 0, 1, 2, 4).
        """
        import torch
        from monai.transforms import NormalizeIntensity

        from medm3.utils.device import autocast_dtype

        self.setup()
        stacked = np.stack(
            [np.asarray(named[key].array, dtype=np.float32) for key in CHANNEL_ORDER]
        )
        norm = NormalizeIntensity(nonzero=True, channel_wise=True, dtype=np.float32)
        x = torch.as_tensor(np.asarray(norm(stacked), dtype=np.float32))[None]
        x = x.to(self._device)
        dtype = self._amp = autocast_dtype(self._device)
        with torch.inference_mode():
            if dtype is not None:
                with torch.autocast(device_type=self._device.type, dtype=dtype):
                    logits = self._window(x)
            else:
                logits = self._window(x)
            logits = logits.float()
            if logits.shape[1] != 3:
                raise bundle.UnusableWeightsError(
                    f"the bundle's network gives {logits.shape[1]} output channels, the BraTS "
                    "expert needs 3 (TC, WT, ET)",
                    self.weights_folder() / bundle.INFERENCE_CONFIG,
                )
            regions = (torch.sigmoid(logits[0]) > THRESHOLD).cpu().numpy()
        return regions_to_labels(regions)

    def _window(self, x: torch.Tensor) -> torch.Tensor:
        from monai.inferers import sliding_window_inference

        from medm3.utils.progress import progress_enabled

        out = sliding_window_inference(
            x,
            roi_size=self._roi,
            sw_batch_size=self._sw_batch,
            predictor=self._net,
            overlap=self._overlap,
            progress=progress_enabled(),
        )
        return out  # type: ignore[return-value]

    def _run(self, inputs: dict[str, MedicalImage], args: str, context: RunContext) -> ExpertResult:
        t0 = time.perf_counter()
        labels = self.segment(inputs)
        t1 = time.perf_counter()
        ref = inputs[CHANNEL_ORDER[0]]  # T1ce: the image the overlay and SEG refer to
        label_image = ref.with_array(
            labels,
            metadata=label_map_metadata(self.name, ref),
        )
        present = sorted(int(v) for v in np.unique(labels) if v > 0)
        colours = self._colours(present)
        measurements = tumour_volumes(labels, float(np.prod(ref.spacing)))
        overlays = [self._overlay(inputs, label_image, context)]
        return ExpertResult(
            expert=self.name,
            args=args,
            text=prompts.brats_text(colours),
            overlays=overlays,
            label_map=label_image,
            label_names=dict(LABEL_NAMES),
            measurements=measurements,
            timings={"inference": t1 - t0, "render": time.perf_counter() - t1},
            info={
                "device": str(self._device),
                "weights_version": self.weights_id(),
                "channel_order": list(CHANNEL_ORDER),
                "roi_size": list(self._roi),
                "overlap": self._overlap,
                "amp": bundle.amp_name(self._amp),
                "labels_present": present,
            },
        )

    @staticmethod
    def _colours(present: Sequence[int]) -> dict[int, str]:
        from medm3.imaging.overlay import label_color_name

        return {label: label_color_name(label) for label in present}

    def _overlay(
        self, inputs: Mapping[str, MedicalImage], label_image: MedicalImage, context: RunContext
    ) -> Overlay:
        from medm3.experts.views import overlay_slice
        from medm3.imaging.render import render_slice
        from medm3.imaging.slicing import normalize_plane

        on = str(context.options.get("overlay_on", OVERLAY_INPUTS[0])).lower()
        if on not in OVERLAY_INPUTS:
            raise ExpertError(f"overlay_on must be one of {', '.join(OVERLAY_INPUTS)}, not {on!r}")
        plane = normalize_plane(context.plane or "axial")
        index = context.slice_index
        if index is None:  # largest tumour area; ties: more core, then more enhancing
            index = overlay_slice(label_image.array, plane, tiebreak=TIEBREAK)
        image = render_slice(inputs[on], plane=plane, index=index, mask=label_image, legend=False)
        return Overlay(
            name=f"overlay_{plane}_{index}",
            image=image,
            plane=plane,
            slice_index=int(index),
            caption=f"BraTS tumour sub-regions on {on.upper()}, {plane} slice {index}",
        )
