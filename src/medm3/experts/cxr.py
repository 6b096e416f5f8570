"""CXR expert: an ensemble of TorchXRayVision chest X-ray classifiers (18 findings).

The eight models of :data:`medm3.experts.catalogue.CXR_MODELS` (seven
DenseNet-121 at 224 px and a ResNet-50 at 512 px) are loaded once per expert
instance through torchxrayvision's own ``weights=`` path
(``xrv.models.DenseNet(weights=name, cache_dir=folder)`` /
``xrv.models.ResNet(...)``), from the folder given by
``resolve_weights("cxr", weights)``.

Preprocessing (per image, then per model resolution):

1. **Grayscale**: 2D images are used as they are; RGB images become luminance
   ``0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601). The readers already turn RGB
   with equal channels into grayscale, so this only affects real colour images
   (the reference demo took the first channel; for gray images both agree).
2. **Scaling**: ``xrv.datasets.normalize(img, maxval)`` to [-1024, 1024] with
   ``maxval`` from the image's bit depth (:func:`intensity_max`): 255 for uint8;
   ``2**BitsStored - 1`` for other integer data when the reader recorded
   ``metadata["bits_stored"]``, else the smallest ``2**b - 1`` (b >= 8) holding
   the maximum (a uint16 PNG using the full range: 65535; 12-bit data: 4095);
   1.0 for floats in [0, 1]; data with negative values (or floats beyond 1) is
   shifted by its minimum and scaled by its range. MONOCHROME1 DICOM is
   already inverted by the reader.
3. **Center crop** to a square (``xrv.datasets.XRayCenterCrop``).
4. **Resize** to each model's ``input_resolution`` (224 or 512) with
   ``torch.nn.functional.interpolate(mode="bilinear", antialias=True)`` - the
   exact resize xrv models apply internally (``xrv.utils.fix_resolution``)
   when given another size, which is what the reference demo relied on.

Calibration (verified in torchxrayvision 1.5.7, ``xrv.models.op_norm``): when
weights are loaded by name each model carries ``op_threshs`` (its operating
points) and ``forward`` returns ``sigmoid(logit)`` rescaled piecewise-linearly
so that the operating point maps to 0.5: ``p / (2 t)`` below ``t`` and
``1 - (1 - p) / (2 (1 - t))`` above. Labels a model does not predict (empty
``targets`` entry, or NaN operating point, e.g. the ResNet's "Lung Lesion" and
"Enlarged Cardiomediastinum") come out as a constant 0.5.

Ensembles (``ensemble=`` constructor argument, or ``context.options["ensemble"]``
/ ``predict_batch(ensemble=...)`` per call):

* ``"calibrated"`` (default): for each label, the mean of the calibrated outputs
  of the models that really predict it (non-empty target and finite operating
  point), so 0.5 is a consensus operating point; ``yes`` when > 0.5.
* ``"reference"``: parity with the VILA-M3 reference demo, which averaged fixed
  model subsets for eight labels (:data:`REFERENCE_GROUPS`) and all eight
  models for the others, *including* the constant 0.5 that models without the
  label return; ``yes`` when > 0.5. The ``released`` conversation protocol asks
  for this ensemble. (The demo's models were calibrated by xrv
  in the same way; what differs is which outputs enter the mean.)

The result text is :func:`medm3.prompts.classification_text` of the yes/no
findings (``label: yes/no`` lines in torchxrayvision's order, ``yes`` when the
probability is above 0.5 as in the reference training data). What the VLM
reads is written by the conversation protocol (:mod:`medm3.agent.protocol`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from medm3 import prompts
from medm3.experts.base import Expert, ExpertError, ExpertResult, RunContext
from medm3.experts.catalogue import CXR_MODELS
from medm3.experts.xrv import import_xrv

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from medm3.imaging.image import MedicalImage

#: The 18 labels, in torchxrayvision's ``default_pathologies`` order.
LABELS: tuple[str, ...] = (
    "Atelectasis",
    "Consolidation",
    "Infiltration",
    "Pneumothorax",
    "Edema",
    "Emphysema",
    "Fibrosis",
    "Effusion",
    "Pneumonia",
    "Pleural_Thickening",
    "Cardiomegaly",
    "Nodule",
    "Mass",
    "Hernia",
    "Lung Lesion",
    "Fracture",
    "Lung Opacity",
    "Enlarged Cardiomediastinum",
)

#: Ensemble modes.
ENSEMBLES: tuple[str, ...] = ("calibrated", "reference")

_ALL = "densenet121-res224-all"
_NIH = "densenet121-res224-nih"
_CHEX = "densenet121-res224-chex"
_PC = "densenet121-res224-pc"
_RESNET = "resnet50-res512-all"
_GROUP_2 = (_ALL, _CHEX, _PC, _RESNET)

#: The reference demo's model subsets per label (labels not listed: all models).
REFERENCE_GROUPS: dict[str, tuple[str, ...]] = {
    "Fracture": (_ALL, _NIH, _CHEX, _RESNET),
    "Pneumothorax": (_RESNET,),
    "Lung Opacity": CXR_MODELS,
    "Atelectasis": _GROUP_2,
    "Cardiomegaly": _GROUP_2,
    "Consolidation": _GROUP_2,
    "Edema": _GROUP_2,
    "Effusion": _GROUP_2,
}

#: Probability at or above which a finding is "yes".
THRESHOLD = prompts.CXR_TEXT_THRESHOLD
#: Images per forward pass in :meth:`CXRExpert.predict_batch`.
DEFAULT_BATCH_SIZE = 16


def intensity_max(image: MedicalImage) -> float:
    """The ``maxval`` given to ``xrv.datasets.normalize`` for an image.

    See the module docstring, step 2. Images needing a shift (negative values,
    floats beyond [0, 1]) are handled by :func:`normalise`, which then uses
    the value range; this function returns that range for them.

    Args:
        image: A 2D image (grayscale or RGB).

    Returns:
        The largest value the image's encoding can hold.
    """
    array = np.asarray(image.array)
    if array.dtype == bool:
        return 1.0
    if array.dtype == np.uint8:
        return 255.0
    lo = float(array.min()) if array.size else 0.0
    hi = float(array.max()) if array.size else 0.0
    if array.dtype.kind in "iu" and lo >= 0:
        bits = image.metadata.get("bits_stored")
        if (
            isinstance(bits, (int, np.integer))
            and 1 <= int(bits) <= 32
            and hi <= 2 ** int(bits) - 1
        ):
            return float(2 ** int(bits) - 1)
        needed = max(8, math.ceil(math.log2(hi + 1))) if hi > 0 else 8
        return float(2**needed - 1)
    if array.dtype.kind == "f" and lo >= 0 and hi <= 1.0:
        return 1.0
    return max(hi - lo, 1e-12)


def to_grayscale(array: np.ndarray) -> np.ndarray:
    """``(rows, cols)`` data of a grayscale or RGB(A) image (RGB -> BT.601 luminance)."""
    array = np.asarray(array)
    if array.ndim == 2:
        return array
    if array.ndim == 3 and array.shape[-1] == 1:
        return array[..., 0]
    if array.ndim == 3 and array.shape[-1] >= 3:
        rgb = array[..., :3].astype(np.float64)
        return rgb @ np.array([0.299, 0.587, 0.114])
    raise ExpertError(f"CXR needs a 2D grayscale or RGB image, got shape {array.shape}")


def normalise(image: MedicalImage) -> np.ndarray:
    """Grayscale, scale to [-1024, 1024] and center-crop one image.

    Args:
        image: A 2D X-ray.

    Returns:
        ``float32`` array ``(1, s, s)``, ``s`` = the shorter side.

    Raises:
        ExpertError: A volume or an empty image.
    """
    xrv = import_xrv()
    if image.is_volume:
        raise ExpertError(f"CXR needs a 2D chest X-ray, but {image.source} is a 3D volume")
    if image.array.size == 0:
        raise ExpertError(f"CXR got an empty image ({image.source})")
    maxval = intensity_max(image)
    gray = to_grayscale(image.array)
    raw = np.asarray(image.array)
    shift = raw.dtype.kind not in "bu" and (
        float(raw.min()) < 0 or (raw.dtype.kind == "f" and float(raw.max()) > 1.0)
    )
    gray = gray.astype(np.float64)
    if shift:
        gray = gray - float(raw.min())
    gray = np.clip(gray, 0.0, maxval)  # luminance rounding can exceed maxval by ~1 ulp
    img = xrv.datasets.normalize(gray, maxval)[None, :, :]
    return np.ascontiguousarray(xrv.datasets.XRayCenterCrop()(img), dtype=np.float32)


def resize(batch: torch.Tensor, size: int) -> torch.Tensor:
    """Resize ``(n, 1, s, s)`` to ``(n, 1, size, size)`` as xrv's ``fix_resolution`` does."""
    import torch.nn.functional as F

    if batch.shape[-1] == size and batch.shape[-2] == size:
        return batch
    return F.interpolate(batch, size=(size, size), mode="bilinear", antialias=True)


def model_support(model: Any) -> np.ndarray:
    """Which of :data:`LABELS` a loaded xrv model really predicts.

    A label is supported when the model's ``targets`` entry at its position is
    the label and the operating point there is finite (xrv returns a constant
    0.5 where it is NaN).

    Args:
        model: A torchxrayvision model loaded by weights name.

    Returns:
        Boolean array of length 18.

    Raises:
        RuntimeError: The model's outputs are not aligned with :data:`LABELS`.
    """
    targets = list(getattr(model, "targets", None) or getattr(model, "pathologies", []))
    if len(targets) != len(LABELS) or any(
        t and t != lab for t, lab in zip(targets, LABELS, strict=True)
    ):
        raise RuntimeError(f"{model!r}: outputs are not aligned with the 18 xrv labels")
    support = np.array([bool(t) for t in targets])
    thresholds = getattr(model, "op_threshs", None)
    if thresholds is not None:
        finite = np.isfinite(np.asarray(thresholds.detach().cpu(), dtype=np.float64))
        support &= finite
    return support


def ensemble_average(
    outputs: Mapping[str, np.ndarray],
    support: Mapping[str, np.ndarray],
    ensemble: str = "calibrated",
) -> np.ndarray:
    """Combine per-model calibrated outputs into one probability per label.

    Args:
        outputs: Model name -> ``(n, 18)`` calibrated outputs (label order of
            :data:`LABELS`; unsupported positions may hold anything).
        support: Model name -> boolean ``(18,)`` (see :func:`model_support`).
        ensemble: ``"calibrated"`` (mean over supporting models) or
            ``"reference"`` (mean over :data:`REFERENCE_GROUPS`, else all
            models, whatever they output there).

    Returns:
        ``(n, 18)``; NaN where no model contributes.
    """
    names = list(outputs)
    n = next(iter(outputs.values())).shape[0] if names else 0
    result = np.full((n, len(LABELS)), np.nan)
    for j, label in enumerate(LABELS):
        if ensemble == "reference":
            group = REFERENCE_GROUPS.get(label, tuple(names))
            members = [m for m in names if m in group]
        else:
            members = [m for m in names if bool(support[m][j])]
        if members:
            result[:, j] = np.mean([outputs[m][:, j] for m in members], axis=0)
    return result


class CXRExpert(Expert):
    """Chest X-ray classification: TorchXRayVision ensemble, 18 findings.

    Args:
        device: ``"cuda"``, ``"cpu"``, ``"cuda:N"`` or ``None`` (automatic).
        weights: A folder of torchxrayvision weight files (their release file
            names, see :func:`medm3.experts.catalogue.xrv_filename`) overriding
            the catalogue cache.
        ensemble: ``"calibrated"`` (default) or ``"reference"`` (see the module
            docstring); ``context.options["ensemble"]`` overrides it per run.
        batch_size: Images per forward pass in :meth:`predict_batch`.
    """

    name: ClassVar[str] = "cxr"
    trigger: ClassVar[str] = "CXR"
    card_modality: ClassVar[str] = "chest x-ray (CXR)"
    modalities: ClassVar[tuple[str, ...]] = ("XR",)
    dimensions: ClassVar[tuple[int, ...]] = (2,)
    task: ClassVar[str] = "classification"
    overview: ClassVar[str] = "pre-trained model which are trained on large cohorts of data"
    accuracy: ClassVar[str] = "Good accuracy across several diverse chest x-rays datasets"
    valid_args: ClassVar[tuple[str, ...]] = ()
    weights_name: ClassVar[str | None] = "cxr"

    def __init__(
        self,
        *,
        device: str | None = None,
        weights: str | Path | None = None,
        ensemble: str = "calibrated",
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        super().__init__(device=device, weights=weights)
        self.ensemble = self._check_ensemble(ensemble)
        self.batch_size = max(1, int(batch_size))
        self._models: dict[str, Any] = {}
        self._support: dict[str, np.ndarray] = {}
        self._device: Any = None
        self._folder: Path | None = None
        self._weights_version: str | None = None

    @staticmethod
    def _check_ensemble(ensemble: Any) -> str:
        mode = str(ensemble).strip().lower()
        if mode not in ENSEMBLES:
            raise ExpertError(
                f"unknown CXR ensemble {ensemble!r}; choose one of: {', '.join(ENSEMBLES)}"
            )
        return mode

    # ---------------------------------------------------------------- setup
    def weights_folder(self) -> Path:
        """The folder of torchxrayvision weight files in use.

        Raises:
            WeightsNotFoundError: A weight file is missing.
        """
        from medm3.experts.catalogue import resolve_weights

        if self._folder is None:
            self._folder = resolve_weights("cxr", self.weights)
        return self._folder

    def weights_id(self) -> str:
        """Identifier of the exact weights (for result-cache keys)."""
        from medm3.experts.catalogue import weights_version

        if self._weights_version is None:
            self._weights_version = weights_version("cxr", self.weights_folder())
        return self._weights_version

    def _setup(self) -> None:
        from medm3.utils.device import select_device

        xrv = import_xrv()
        folder = self.weights_folder()
        device = select_device(self.device_preference)
        models: dict[str, Any] = {}
        for name in CXR_MODELS:  # files checked by resolve_weights: xrv will not download
            cls = xrv.models.ResNet if name.startswith("resnet") else xrv.models.DenseNet
            models[name] = cls(weights=name, cache_dir=str(folder)).to(device).eval()
        # We normalise ourselves; mark xrv's one-time input-range heuristic as done so
        # it never prints to stdout (which would corrupt `--json` output).
        xrv.utils.warning_log["norm_check"] = True
        self._support = {name: model_support(m) for name, m in models.items()}
        self._device = device
        self._models = models

    def cache_context(
        self, inputs: dict[str, MedicalImage], context: RunContext
    ) -> dict[str, Any] | None:
        """Cache-key facts: only the ensemble mode changes a CXR result (no overlays)."""
        return {"ensemble": self._check_ensemble(context.options.get("ensemble", self.ensemble))}

    # ------------------------------------------------------------ inference
    def predict_batch(
        self,
        images: Sequence[MedicalImage],
        *,
        ensemble: str | None = None,
        batch_size: int | None = None,
    ) -> list[dict[str, float]]:
        """Ensemble probabilities for several X-rays, batched through each model.

        Args:
            images: 2D X-rays (modality is not checked here; :meth:`run` does).
            ensemble: ``"calibrated"`` / ``"reference"``; default: the instance's.
            batch_size: Images per forward pass (default: the instance's).

        Returns:
            One ``{label: probability}`` dict per image, labels in :data:`LABELS`
            order (labels no model predicts are left out).

        Raises:
            ExpertError: A 3D or empty image, or an unknown ensemble.
        """
        mode = self._check_ensemble(ensemble if ensemble is not None else self.ensemble)
        size = max(1, int(batch_size or self.batch_size))
        return self._predict(list(images), mode, size) if images else []

    def _predict(self, images: list[MedicalImage], mode: str, size: int) -> list[dict[str, float]]:
        """The inference step of :meth:`predict_batch` (checked ensemble mode and batch size)."""
        import torch

        crops = [normalise(image) for image in images]  # bad input fails before weights load
        self.setup()
        outputs = {name: np.zeros((len(crops), len(LABELS))) for name in self._models}
        resolutions = {name: _resolution(m) for name, m in self._models.items()}
        with torch.inference_mode():
            for start in range(0, len(crops), size):
                chunk = crops[start : start + size]
                batches = {
                    res: torch.cat(
                        [resize(torch.from_numpy(c)[None].to(self._device), res) for c in chunk]
                    )
                    for res in sorted(set(resolutions.values()))
                }
                for name, model in self._models.items():
                    out = model(batches[resolutions[name]]).float()
                    if getattr(model, "op_threshs", None) is None:
                        out = torch.sigmoid(out)
                    outputs[name][start : start + len(chunk)] = out.cpu().numpy()
        averaged = ensemble_average(outputs, self._support, mode)
        return [
            {label: float(row[j]) for j, label in enumerate(LABELS) if np.isfinite(row[j])}
            for row in averaged
        ]

    def _run(self, inputs: dict[str, MedicalImage], args: str, context: RunContext) -> ExpertResult:
        mode = self._check_ensemble(context.options.get("ensemble", self.ensemble))
        t0 = time.perf_counter()
        probabilities = self.predict_batch([inputs[self.inputs[0]]], ensemble=mode)[0]
        findings = {label: p > THRESHOLD for label, p in probabilities.items()}
        return ExpertResult(
            expert=self.name,
            args=args,
            text=prompts.classification_text(findings),
            probabilities=probabilities,
            findings=findings,
            timings={"inference": time.perf_counter() - t0},
            info={
                "device": str(self._device),
                "weights_version": self.weights_id(),
                "ensemble": mode,
                "models": list(self._models),
                "threshold": THRESHOLD,
            },
        )


class PrecomputedCXR(CXRExpert):
    """The CXR expert returning given ensemble probabilities for every image.

    For training data whose probabilities were computed elsewhere: only the
    inference step is replaced, so the result text, findings and info come
    from :class:`CXRExpert` itself. No weights are loaded; nothing is cached.

    Args:
        probabilities: Label -> probability (the expert's labels, in the order given).
    """

    cache_results = False

    def __init__(self, probabilities: Mapping[str, float]) -> None:
        super().__init__(device="cpu")
        self._fixed = {str(k): float(v) for k, v in probabilities.items()}

    def _setup(self) -> None:
        """Nothing to load."""

    def weights_id(self) -> str:
        """Identifier recorded instead of a weights version."""
        return "precomputed"

    def _predict(self, images: list[MedicalImage], mode: str, size: int) -> list[dict[str, float]]:
        """The given probabilities, once per image."""
        return [dict(self._fixed) for _ in images]


def _resolution(model: Any) -> int:
    """The input size a loaded xrv model was trained on (224 for DenseNets, 512 ResNet)."""
    res = getattr(model, "input_resolution", None)
    if isinstance(res, int) and res > 0:
        return res
    return 512 if "resnet" in repr(model).lower() else 224
