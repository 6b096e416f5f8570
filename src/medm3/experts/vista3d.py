"""The VISTA3D expert: CT segmentation of 127 structures with class and point prompts.

The VLM writes ``<VISTA3D(hepatic tumor)>``; this expert runs the MONAI
VISTA3D bundle on the full-resolution volume and returns a label map on the
input grid, an overlay of one slice and a text naming the colour of every
structure found.

Weights: a MONAI bundle folder in the released layout (``configs/inference.json``,
``configs/metadata.json``, ``models/model.pt``), from the catalogue cache or
the ``weights=`` override. The network is built from the bundle's
``network_def`` (``vista3d132`` for the released bundle), the checkpoint is
loaded strictly, and patch size / overlap / spacing come from the bundle
config when it defines them.

Modules: :mod:`.vista3d_network` (bundle settings, network, preprocessing),
:mod:`.vista3d_labels` (structures, groups, prompts), :mod:`.vista3d_inputs`
(input checks, point prompts); this one runs inference and writes the result.

Pipeline (the bundle's inference config, step by step): channel first;
``Spacing`` 1.5 mm (bilinear); ``CropForeground`` (margin 10, allow smaller);
``VistaPreTransformd`` (sub-class expansion of the label prompt, special
point labels); ``ScaleIntensityRange`` -963.8..1053.7 HU -> 0..1 (clipped);
``Orientation`` RAS; float32. Sliding-window inference with the class
prompts (patch 128^3, overlap 0.3, Gaussian blending, sw batch 1, AMP on
CUDA, seed 123), or the point-centred window inferer when point prompts are
given. ``VistaPostTransformd`` (argmax with background, mapped back to label
ids), ``Invertd`` with nearest interpolation back to the input grid. The
bundle writes 255 where nothing was predicted (outside the point windows);
medm3 label maps (uint8, on the input grid) hold 0 there.

Arguments: one of :attr:`Vista3DExpert.valid_args` (label groups) or
comma-separated VISTA3D structure names / ids (``"liver, spleen"``).

Options (``RunContext.options``):

* ``points``: ``[[x, y, z], ...]`` voxel indices on the input grid (the
  RAS+ array of the :class:`~medm3.imaging.image.MedicalImage`).
* ``point_labels``: ``[1, 0, ...]``: 1 positive, 0 negative (default: all 1).
* ``point_class``: structure name or id the points belong to (default: the
  argument, when it names exactly one structure).
* ``legend``: draw a legend beside the overlay (default False: the result
  text names the colours).

torch and MONAI are imported inside methods only.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medm3 import prompts
from medm3.experts import bundle
from medm3.experts import vista3d_labels as labels
from medm3.experts.base import Expert, ExpertError, ExpertResult, RunContext
from medm3.experts.vista3d_inputs import main_image as _main_image
from medm3.experts.vista3d_inputs import point_prompts as _point_prompts
from medm3.experts.vista3d_inputs import to_preprocessed as _to_preprocessed
from medm3.experts.vista3d_inputs import volume_array as _volume_array
from medm3.experts.vista3d_network import (
    DEFAULT_OVERLAP,
    DEFAULT_ROI,
    DEFAULT_SPACING,
    HU_RANGE,
    NAN_LABEL,
    SEED,
    BundleSettings,
    _preprocessing,
    build_network,
    load_network,
    load_state_dict,
    read_bundle,
)
from medm3.experts.vista3d_result import segmentation_result
from medm3.utils.names import normalize_name, strip_arg

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from medm3.imaging.image import MedicalImage

__all__ = [
    "ACCURACY",
    "DEFAULT_OVERLAP",
    "DEFAULT_ROI",
    "DEFAULT_SPACING",
    "HU_RANGE",
    "NAN_LABEL",
    "OVERVIEW",
    "SEED",
    "BundleSettings",
    "Vista3DExpert",
    "build_network",
    "load_network",
    "load_state_dict",
    "read_bundle",
]

OVERVIEW = (
    "domain-specialized interactive foundation model developed for segmenting and "
    "annotating human anatomies with precision"
)
ACCURACY = "127 organs: 0.792 Dice on average"


class Vista3DExpert(Expert):
    """VISTA3D CT segmentation expert (see the module docstring).

    Args:
        device: ``"cuda"``, ``"cpu"``, ``"cuda:N"`` or ``None``/``"auto"``.
        weights: A VISTA3D bundle folder overriding the catalogue cache.
    """

    name = "vista3d"
    trigger = "VISTA3D"
    card_modality = "CT"
    modalities = ("CT",)
    dimensions = (3,)
    task = "segmentation"
    overview = OVERVIEW
    accuracy = ACCURACY
    valid_args = (
        "everything",
        "hepatic tumor",
        "pancreatic tumor",
        "lung tumor",
        "bone lesion",
        "organs",
        "cardiovascular",
        "gastrointestinal",
        "skeleton",
        "muscles",
    )
    open_args = True
    weights_name = "vista3d"

    def __init__(self, *, device: str | None = None, weights: str | Path | None = None) -> None:
        super().__init__(device=device, weights=weights)
        self._network: Any = None
        self._device: Any = None
        self._settings: BundleSettings | None = None
        self._preprocessing: Any = None
        self._weights_version = ""
        self._bundle = bundle.BundleRef("vista3d", weights)

    # ----------------------------------------------------------------- args
    def parse_args(self, args: str | None) -> str:
        """Normalise a label group or a comma-separated list of structure names.

        Args:
            args: ``"hepatic tumor"``, ``"Liver, spleen"``, ``"3, 5"`` ... (empty:
                ``"everything"``).

        Returns:
            The canonical group name, or canonical structure names joined by ``", "``.

        Raises:
            ExpertError: An unknown name (with "did you mean" suggestions).
        """
        text = strip_arg(args)
        if normalize_name(text) in ("", "none", "args"):
            return self.valid_args[0]
        names = labels.parse_structures(text)
        unknown = [n[1:] for n in names if n.startswith("?")]
        if unknown:
            item = unknown[0]
            hint = labels.did_you_mean(item)
            raise ExpertError(
                f"{item!r} is not a valid argument for {self.trigger}. "
                + (f"{hint} " if hint else "")
                + f"Valid args are: {prompts.format_valid_args(self.valid_args)}, or VISTA3D "
                "structure names "
                "separated by commas (e.g. 'liver, spleen')"
            )
        if not names:
            return self.valid_args[0]
        return ", ".join(names)

    @staticmethod
    def prompt_ids(args: str) -> tuple[int, ...]:
        """Label-prompt ids sent to the network for a normalised argument (expanded).

        Args:
            args: Output of :meth:`parse_args`.

        Returns:
            E.g. ``(1, 26)`` for ``"hepatic tumor"``, ``(14, 5)`` for ``"kidney"``.
        """
        return labels.expand_prompt(labels.prompt_ids(args))

    # ---------------------------------------------------------------- setup
    def _bundle_folder(self) -> Path:
        return self._bundle.folder

    def weights_id(self) -> str:
        """Identifier of the exact weights (``catalogue.weights_version`` of the bundle).

        Raises:
            WeightsNotFoundError: The bundle is missing.
        """
        return self._bundle.version

    def _setup(self) -> None:
        from medm3.utils.device import select_device

        folder = self._bundle_folder()
        settings = read_bundle(folder)
        device = select_device(self.device_preference)
        network = load_network(settings, device)
        self._preprocessing = _preprocessing(settings.spacing)
        self._settings, self._device, self._network = settings, device, network
        self._weights_version = self._bundle.version

    # ------------------------------------------------------------------ run
    def _run(self, inputs: dict[str, MedicalImage], args: str, context: RunContext) -> ExpertResult:
        image = inputs["image"]
        volume = _volume_array(image, self.trigger)
        options = context.options or {}
        prompt = labels.prompt_ids(args)
        points = _point_prompts(options, prompt, image.spatial_shape, self.trigger)
        label_map, info, timings = self._segment(image, volume, prompt, points)
        result = segmentation_result(image, label_map, args, context)
        result.info.update(info)
        result.timings.update(timings)
        return result

    def _segment(
        self,
        image: MedicalImage,
        volume: np.ndarray,
        prompt: Sequence[int],
        points: tuple[list[list[float]], list[int], int] | None,
    ) -> tuple[np.ndarray, dict[str, Any], dict[str, float]]:
        """Preprocess, infer and invert; returns the label map on the input grid."""
        import torch
        from monai.apps.vista3d.transforms import VistaPreTransformd
        from monai.data import MetaTensor

        from medm3.utils.device import autocast_dtype

        settings, device = self._settings, self._device
        assert settings is not None
        t0 = time.perf_counter()
        with torch.no_grad():
            tensor = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None]
            affine = torch.as_tensor(np.asarray(image.affine, dtype=np.float64))
            data = self._preprocessing({"image": MetaTensor(tensor, affine=affine).to(device)})
            # VistaPreTransformd: sub-class expansion + special point labels, as in the bundle.
            # with points, the prompt is the single structure the points belong to
            data["label_prompt"] = [points[2]] if points else [int(i) for i in prompt]
            if points:
                data["point_labels"] = list(points[1])
            data = VistaPreTransformd(
                keys="image", subclass={str(k): list(v) for k, v in labels.SUBCLASS.items()}
            )(data)
            label_prompt = list(dict.fromkeys(int(i) for i in data["label_prompt"]))
            pre = data["image"]
            t1 = time.perf_counter()
            amp = autocast_dtype(device)
            autocast = (
                torch.autocast(device_type="cuda", dtype=amp) if amp is not None else nullcontext()
            )
            cuda_ids: list[int] = []
            if device.type == "cuda":
                cuda_ids = [torch.cuda.current_device() if device.index is None else device.index]
            with torch.random.fork_rng(devices=cuda_ids):
                torch.manual_seed(SEED)
                with autocast:
                    logits = self._infer(
                        pre, label_prompt, points, data.get("point_labels"), image.affine
                    )
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t2 = time.perf_counter()
            label_map = self._postprocess(pre, logits, label_prompt)
            t3 = time.perf_counter()
        info = {
            "device": str(device),
            "weights_version": self._weights_version,
            "bundle_version": settings.version,
            "patch_size": list(settings.roi_size),
            "overlap": settings.overlap,
            "spacing_mm": list(settings.spacing),
            "label_prompt": label_prompt,
            "preprocessed_shape": [int(s) for s in pre.shape[1:]],
            "amp": bundle.amp_name(amp),
        }
        if points:
            info["points"] = points[0]
            info["point_labels"] = points[1]
            info["point_class"] = points[2]
        timings = {"preprocess": t1 - t0, "inference": t2 - t1, "postprocess": t3 - t2}
        return label_map, info, timings

    def _infer(
        self,
        pre: Any,
        label_prompt: list[int],
        points: tuple[list[list[float]], list[int], int] | None,
        point_labels: Any,
        input_affine: np.ndarray,
    ) -> torch.Tensor:
        """Sliding-window (class prompts) or point-window inference; ``[1, B, H, W, D]`` logits."""
        import torch
        from monai.apps.vista3d.inferer import point_based_window_inferer
        from monai.inferers import sliding_window_inference

        from medm3.utils.progress import progress_enabled

        settings, device, network = self._settings, self._device, self._network
        assert settings is not None
        x = pre.unsqueeze(0)
        class_vector = torch.tensor(label_prompt, device=device).unsqueeze(-1)
        prompt_class = class_vector.clone()
        head = getattr(network, "point_head", None)
        last = getattr(head, "last_supported", labels.LAST_SUPPORTED)
        if bool(torch.any(class_vector > last)):
            class_vector = None  # zero-shot ids go through the point head only
        if points:
            coords = _to_preprocessed(points[0], input_affine, pre.affine)
            with warnings.catch_warnings():  # MONAI re-sets the affine it copied itself
                warnings.filterwarnings("ignore", message="Setting affine, but the applied meta")
                return point_based_window_inferer(
                    inputs=x,
                    roi_size=settings.roi_size,
                    predictor=network,
                    point_coords=torch.tensor([coords], dtype=torch.float32, device=device),
                    point_labels=torch.tensor([list(point_labels)], device=device),
                    class_vector=class_vector,
                    prompt_class=prompt_class,
                    prev_mask=None,
                    transpose=True,
                )

        def run(out_device: Any) -> torch.Tensor:
            return sliding_window_inference(
                inputs=x,
                roi_size=settings.roi_size,
                sw_batch_size=1,
                predictor=network,
                overlap=settings.overlap,
                mode="gaussian",
                sw_device=device,
                device=out_device,
                progress=progress_enabled(),
                transpose=True,
                point_coords=None,
                point_labels=None,
                class_vector=class_vector,
                prompt_class=prompt_class,
                prev_mask=None,
            )

        try:
            return run(device)
        except torch.cuda.OutOfMemoryError:  # as the bundle: stitch on the CPU instead
            torch.cuda.empty_cache()
            return run("cpu")

    def _postprocess(self, pre: Any, logits: Any, label_prompt: list[int]) -> np.ndarray:
        """``VistaPostTransformd`` + ``Invertd`` (nearest) + NaN -> 255, then 255 -> 0."""
        import torch
        from monai.apps.vista3d.transforms import VistaPostTransformd
        from monai.data import MetaTensor
        from monai.transforms import Invertd

        raw = logits.as_tensor() if isinstance(logits, MetaTensor) else logits

        def argmax_map(pred: torch.Tensor) -> torch.Tensor:
            prompt = torch.tensor(label_prompt, device=pred.device)
            return VistaPostTransformd(keys="pred")({"pred": pred, "label_prompt": prompt})["pred"]

        try:  # float32: bf16/fp16 cannot hold every "id + 0.5" the mapping uses
            post = argmax_map(raw[0].float())
        except torch.cuda.OutOfMemoryError:  # many classes on a large volume: use the CPU
            torch.cuda.empty_cache()
            post = argmax_map(raw[0].to("cpu").float())
        post = MetaTensor(post.to(pre.device), meta=copy.deepcopy(dict(pre.meta)))
        post.applied_operations = copy.deepcopy(pre.applied_operations)
        inverted = Invertd(
            keys="pred",
            transform=self._preprocessing,
            orig_keys="image",
            nearest_interp=True,
            to_tensor=True,
        )({"image": pre, "pred": post})["pred"]
        out = torch.nan_to_num(torch.as_tensor(inverted), nan=float(NAN_LABEL))
        array = out[0].round().to("cpu", torch.int16).numpy()
        array[array == NAN_LABEL] = 0  # "not predicted" is background in medm3 label maps
        return array.astype(np.uint8)

    # ---------------------------------------------------------------- cache
    def derive_from_cache(
        self,
        lookup: Callable[[str], ExpertResult | None],
        inputs: Mapping[str, MedicalImage] | MedicalImage,
        args: str,
        context: RunContext | None = None,
    ) -> ExpertResult | None:
        """Serve a subset request from a cached ``everything`` result of the same image.

        A label group or structure list whose expanded ids all lie inside
        :data:`~medm3.experts.vista3d_labels.EVERYTHING` is answered by keeping
        only those ids of the cached ``everything`` label map (no network run).
        Tumour ids are not in ``everything``, so ``hepatic tumor`` returns None
        and really runs. Point-prompt results are never used or derived.

        The cache key includes the context, so the cached result was made with
        the same plane/slice request; without ``context`` the overlay keeps the
        cached plane, and its slice when that slice was requested by the caller
        (else the largest-area slice of the subset is shown).

        Args:
            lookup: ``lookup(other_args)`` -> cached result for the same image, or None.
            inputs: The checked input image(s).
            args: Normalised argument (output of :meth:`parse_args`).
            context: The run context, when the caller passes it.

        Returns:
            The derived result, or None when the request must really run.
        """
        if context is not None and context.options.get("points") is not None:
            return None
        everything = self.valid_args[0]
        if args == everything:
            return None
        try:
            wanted = self.prompt_ids(args)
        except KeyError:
            return None
        if not wanted or not set(wanted) <= set(labels.EVERYTHING):
            return None
        cached = lookup(everything)
        if cached is None or cached.label_map is None or "points" in cached.info:
            return None
        image = _main_image(inputs, self.inputs[0])
        source = np.asarray(cached.label_map.array)
        if image is None or source.shape != image.spatial_shape:
            return None
        if context is None:
            shown = cached.overlays[0] if cached.overlays else None
            context = RunContext(plane=(shown.plane if shown else None) or "axial")
            if shown is not None and cached.info.get("slice_choice") == "requested":
                context.slice_index = shown.slice_index
        t0 = time.perf_counter()
        subset = np.where(np.isin(source, wanted), source, 0).astype(np.uint8)
        result = segmentation_result(image, subset, args, context)
        keep = ("device", "weights_version", "bundle_version", "patch_size", "overlap")
        result.info.update({k: cached.info[k] for k in keep if k in cached.info})
        result.info.update({"label_prompt": list(wanted), "derived_from": everything})
        result.timings["derive"] = time.perf_counter() - t0
        return result
