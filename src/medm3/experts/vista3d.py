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
import json
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medm3 import prompts
from medm3.errors import InputError, MedM3Error
from medm3.experts import vista3d_labels as labels
from medm3.experts.base import Expert, ExpertError, ExpertResult, Overlay, RunContext
from medm3.experts.catalogue import WeightsNotFoundError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from medm3.imaging.image import MedicalImage

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

OVERVIEW = (
    "domain-specialized interactive foundation model developed for segmenting and "
    "annotating human anatomies with precision"
)
ACCURACY = "127 organs: 0.792 Dice on average"


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
    """Read a bundle's inference config and metadata.

    ``patch_size`` (or ``inferer.roi_size``), ``inferer.overlap`` (or
    ``overlap``) and ``resample_spacing`` are taken from the config when they
    are literal values; otherwise the released bundle's values are used.

    Args:
        folder: Bundle folder (``configs/``, ``models/``).

    Returns:
        The settings.

    Raises:
        MedM3Error: A config file exists but is not valid JSON.
    """
    root = Path(folder)
    config = _read_json(root / "configs" / "inference.json")
    meta = _read_json(root / "configs" / "metadata.json")
    inferer = config.get("inferer") if isinstance(config.get("inferer"), dict) else {}
    roi = _triple(config.get("patch_size"), int) or _triple(inferer.get("roi_size"), int)
    spacing = _triple(config.get("resample_spacing"), float)
    overlap = inferer.get("overlap", config.get("overlap"))
    if not isinstance(overlap, (int, float)) or isinstance(overlap, bool) or not 0 <= overlap < 1:
        overlap = DEFAULT_OVERLAP
    return BundleSettings(
        folder=root,
        config=config,
        version=str(meta.get("version", "")),
        roi_size=roi or DEFAULT_ROI,  # type: ignore[arg-type]
        overlap=float(overlap),
        spacing=spacing or DEFAULT_SPACING,  # type: ignore[arg-type]
    )


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise MedM3Error(f"bundle config is not valid JSON: {exc}", path) from None
    return data if isinstance(data, dict) else {}


def _triple(value: Any, kind: type) -> tuple[Any, Any, Any] | None:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        return None
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value):
        return tuple(kind(v) for v in value)  # type: ignore[return-value]
    return None


def build_network(settings: BundleSettings, *, skip_init: bool = False) -> torch.nn.Module:
    """Build the VISTA3D network described by a bundle (no weights loaded).

    Uses the config's ``network_def`` through :class:`monai.bundle.ConfigParser`
    (the config's ``imports`` are not executed; ``monai``, ``torch`` and
    ``numpy`` are available to expressions), else
    ``monai.networks.nets.vista3d132(in_channels=1)``.

    Args:
        settings: Output of :func:`read_bundle`.
        skip_init: Build the parameters on the ``meta`` device (no random
            initialisation; allocate them with ``to_empty`` before loading).

    Returns:
        The network (in training mode, on CPU or ``meta``).

    Raises:
        MedM3Error: ``network_def`` cannot be built or is not a ``torch.nn.Module``.
        BundleCodeError: ``network_def`` holds code other than a known network
            constructor and the bundle is not trusted (``--trust-bundle-code``).
    """
    import contextlib

    import torch

    from medm3.experts.bundle_code import check_network_def

    ctx = torch.device("meta") if skip_init else contextlib.nullcontext()
    config = settings.config
    check_network_def(config, settings.folder / "configs" / "inference.json")
    with ctx:
        if "network_def" not in config:
            from monai.networks.nets import vista3d132

            return vista3d132(in_channels=1)
        from monai.bundle import ConfigParser

        parsed = {k: v for k, v in config.items() if k != "imports"}
        parsed["bundle_root"] = str(settings.folder)
        try:
            network = ConfigParser(parsed).get_parsed_content("network_def", instantiate=True)
        except Exception as exc:
            raise MedM3Error(
                f"cannot build the network from network_def of "
                f"{settings.folder / 'configs' / 'inference.json'}: {exc}"
            ) from exc
    if not isinstance(network, torch.nn.Module):
        raise MedM3Error(
            f"network_def of {settings.folder / 'configs' / 'inference.json'} gave "
            f"{type(network).__name__}, not a torch.nn.Module"
        )
    return network


def load_state_dict(path: str | Path) -> dict[str, Any]:
    """Read a VISTA3D checkpoint as a plain state dict.

    Accepts a raw state dict or a ``{"model": state_dict}`` wrapper (also
    ``"state_dict"``/``"network"``), and strips a ``module.`` prefix
    (``DistributedDataParallel`` checkpoints). Loaded with
    ``weights_only=True`` (memory-mapped when the file format allows).

    Args:
        path: The ``models/model.pt`` file.

    Returns:
        Parameter name -> tensor.

    Raises:
        WeightsNotFoundError: The file does not exist.
        MedM3Error: The file is not a readable checkpoint or holds no state dict.
    """
    import torch

    file = Path(path)
    if not file.is_file():
        raise WeightsNotFoundError(
            f"VISTA3D checkpoint not found: {file} (expected models/model.pt in the bundle "
            "folder; run `m3 experts download vista3d` or point --weights at a bundle folder)"
        )
    try:
        try:
            data = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) format cannot be memory-mapped
            data = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise MedM3Error(f"cannot read the VISTA3D checkpoint: {exc}", file) from exc
    if isinstance(data, Mapping):
        for key in ("model", "state_dict", "network"):
            inner = data.get(key)
            if isinstance(inner, Mapping) and inner and _is_state_dict(inner):
                data = inner
                break
    if not isinstance(data, Mapping) or not data or not _is_state_dict(data):
        raise MedM3Error(
            "checkpoint holds no state dict (expected a state dict or {'model': state_dict})",
            file,
        )
    prefix = "module."
    if all(str(k).startswith(prefix) for k in data):
        data = {str(k)[len(prefix) :]: v for k, v in data.items()}
    return dict(data)


def _is_state_dict(data: Mapping[Any, Any]) -> bool:
    import torch

    return all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items())


def load_network(settings: BundleSettings, device: Any = "cpu") -> torch.nn.Module:
    """Build the bundle's network and load ``models/model.pt`` into it (strict).

    The parameters are allocated on ``device`` without random initialisation
    (built on ``meta``, then ``to_empty``) and filled from the memory-mapped
    checkpoint, so loading costs one read of the file and no mapping of it
    outlives the call. Networks with non-persistent buffers are built normally.

    Args:
        settings: Output of :func:`read_bundle`.
        device: Where the network goes (``"cpu"``, a ``torch.device`` ...).

    Returns:
        The network on ``device``, in eval mode, float32.

    Raises:
        WeightsNotFoundError: The checkpoint is missing.
        MedM3Error: The checkpoint does not match the network.
    """
    state = load_state_dict(settings.folder / "models" / "model.pt")
    network = build_network(settings, skip_init=True)
    tensors = {n for n, _ in network.named_parameters()} | {n for n, _ in network.named_buffers()}
    if tensors <= set(network.state_dict()):  # every tensor comes from the checkpoint
        network = network.to_empty(device=device)
    else:  # non-persistent buffers need the constructor's values
        network = build_network(settings).to(device)
    _load_strict(network, state)
    return network.float().eval()


def _load_strict(network: torch.nn.Module, state: Mapping[str, Any]) -> None:
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise MedM3Error(
            f"the VISTA3D checkpoint does not match the network of the bundle: {exc}"
        ) from None


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
        text = (args or "").strip().strip("'\"").strip()
        if labels.normalize_name(text) in ("", "none", "args"):
            return self.valid_args[0]
        names = labels.parse_structures(text)
        unknown = [n[1:] for n in names if n.startswith("?")]
        if unknown:
            item = unknown[0]
            close = labels.suggestions(item)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ExpertError(
                f"{item!r} is not a valid argument for {self.trigger}{hint} Valid args are: "
                f"{prompts.format_valid_args(self.valid_args)}, or VISTA3D structure names "
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
        from medm3.experts.catalogue import resolve_weights

        return resolve_weights("vista3d", self.weights)

    def weights_id(self) -> str:
        """Identifier of the exact weights (``catalogue.weights_version`` of the bundle).

        Raises:
            WeightsNotFoundError: The bundle is missing.
        """
        from medm3.experts.catalogue import weights_version

        return weights_version("vista3d", self._bundle_folder())

    def _setup(self) -> None:
        from medm3.experts.catalogue import weights_version
        from medm3.experts.device import select_device

        folder = self._bundle_folder()
        settings = read_bundle(folder)
        device = select_device(self.device_preference)
        network = load_network(settings, device)
        self._preprocessing = _preprocessing(settings.spacing)
        self._settings, self._device, self._network = settings, device, network
        self._weights_version = weights_version("vista3d", folder)

    # ------------------------------------------------------------------ run
    def _run(self, inputs: dict[str, MedicalImage], args: str, context: RunContext) -> ExpertResult:
        image = inputs["image"]
        volume = _volume_array(image, self.trigger)
        options = context.options or {}
        prompt = labels.prompt_ids(args)
        points = _point_prompts(options, prompt, image.spatial_shape, self.trigger)
        label_map, info, timings = self._segment(image, volume, prompt, points)
        result = self._result(image, label_map, args, context, options)
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

        from medm3.experts.device import autocast_dtype

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
                torch.autocast(device_type="cuda", dtype=amp)
                if amp is not None
                else _null_context()
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
            "amp": str(amp).replace("torch.", "") if amp is not None else None,
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

    # --------------------------------------------------------------- result
    def _result(
        self,
        image: MedicalImage,
        label_map: np.ndarray,
        args: str,
        context: RunContext,
        options: Mapping[str, Any],
    ) -> ExpertResult:
        """Label map, text, overlay and info from a label array on the input grid."""
        from medm3.imaging.overlay import label_color_name
        from medm3.imaging.render import render_slice
        from medm3.imaging.slicing import check_slice, default_slice, normalize_plane

        t0 = time.perf_counter()
        found = [int(i) for i in np.unique(label_map) if i > 0]
        names = {i: labels.VISTA3D_LABELS.get(i, f"label {i}") for i in found}
        colours = {i: label_color_name(i) for i in found}
        text = prompts.segmentation_text([(colours[i], names[i]) for i in found])
        mask = image.with_array(
            label_map, metadata={**image.metadata, "content": "label_map", "expert": self.name}
        )
        try:
            plane = normalize_plane(context.plane or "axial")
            choice = "requested" if context.slice_index is not None else "largest"
            if context.slice_index is not None:
                index = check_slice(context.slice_index, image.spatial_shape, plane)
            else:
                tumours = [i for i in found if i in labels.TUMOR_IDS]
                chosen = np.isin(label_map, tumours) if tumours else label_map
                index = default_slice(image.spatial_shape, plane, np.asarray(chosen, np.uint8))
            picture = render_slice(
                image,
                plane=plane,
                index=index,
                mask=mask,
                label_names=names,
                legend=bool(options.get("legend", False)),
            )
        except ExpertError:
            raise
        except InputError as exc:
            raise ExpertError(exc.message) from None
        overlay = Overlay(
            name=f"overlay_{plane}_{index}",
            image=picture,
            plane=plane,
            slice_index=index,
            caption=f"VISTA3D ({args}): {plane} slice {index}, {len(found)} structures found",
        )
        return ExpertResult(
            expert=self.name,
            args=args,
            text=text,
            overlays=[overlay],
            label_map=mask,
            label_names=names,
            timings={"render": time.perf_counter() - t0},
            info={"colors": {str(i): colours[i] for i in found}, "slice_choice": choice},
        )

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
        result = self._result(image, subset, args, context, context.options)
        keep = ("device", "weights_version", "bundle_version", "patch_size", "overlap")
        result.info.update({k: cached.info[k] for k in keep if k in cached.info})
        result.info.update({"label_prompt": list(wanted), "derived_from": everything})
        result.timings["derive"] = time.perf_counter() - t0
        return result


# ------------------------------------------------------------------- helpers
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


class _null_context:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _volume_array(image: MedicalImage, trigger: str) -> np.ndarray:
    if not image.is_volume:
        raise ExpertError(f"{trigger} needs a 3D CT volume, but {image.source} is a 2D image")
    array = np.asarray(image.array)
    if array.ndim == 4:
        if array.shape[-1] != 1:
            raise ExpertError(
                f"{trigger} needs a single-channel CT volume, got {array.shape[-1]} channels"
            )
        array = array[..., 0]
    if min(array.shape) < 1:
        raise ExpertError(f"{trigger} got an empty volume {array.shape}")
    return array


def _main_image(
    inputs: Mapping[str, MedicalImage] | MedicalImage, name: str
) -> MedicalImage | None:
    from medm3.imaging.image import MedicalImage

    if isinstance(inputs, MedicalImage):
        return inputs
    if isinstance(inputs, Mapping):
        return inputs.get(name) or next(iter(inputs.values()), None)
    return None


def _point_prompts(
    options: Mapping[str, Any], prompt: Sequence[int], shape: Sequence[int], trigger: str
) -> tuple[list[list[float]], list[int], int] | None:
    """Validate ``points``/``point_labels``/``point_class``; None when no points."""
    raw = options.get("points")
    if raw is None:
        return None
    try:
        points = [[float(c) for c in p] for p in raw]
    except (TypeError, ValueError):
        raise ExpertError(f"{trigger} points must be [[x, y, z], ...] voxel indices") from None
    if not points or any(len(p) != 3 for p in points):
        raise ExpertError(f"{trigger} points must be [[x, y, z], ...] voxel indices")
    for p in points:
        if not all(-0.5 <= c <= s - 0.5 for c, s in zip(p, shape, strict=True)):
            raise ExpertError(f"{trigger} point {p} lies outside the volume {tuple(shape)}")
    raw_labels = options.get("point_labels")
    point_labels = [1] * len(points) if raw_labels is None else list(raw_labels)
    if len(point_labels) != len(points) or any(v not in (0, 1) for v in point_labels):
        raise ExpertError(f"{trigger} point_labels must hold one 1 (positive) or 0 per point")
    cls = options.get("point_class")
    if cls is not None:
        sid = labels.structure_id(str(cls))
        if sid is None:
            close = labels.suggestions(str(cls))
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ExpertError(f"{trigger} point_class {cls!r} is not a VISTA3D structure{hint}")
    elif len(prompt) == 1:
        sid = prompt[0]
    else:
        raise ExpertError(
            f"{trigger} point prompts segment one structure: name it as the argument "
            "(e.g. 'liver') or give the point_class option"
        )
    if sid in labels.SUBCLASS:
        raise ExpertError(
            f"{trigger} point prompts need a single structure; "
            f"{labels.VISTA3D_LABELS[sid]!r} stands for several (name one of them)"
        )
    return points, [int(v) for v in point_labels], int(sid)


def _to_preprocessed(
    points: list[list[float]], input_affine: Any, pre_affine: Any
) -> list[list[float]]:
    """Input-grid voxel coordinates -> voxel coordinates of the preprocessed volume."""
    original = np.asarray(input_affine, dtype=np.float64)
    current = np.asarray(pre_affine, dtype=np.float64)
    homogeneous = np.c_[np.asarray(points, dtype=np.float64), np.ones(len(points))]
    mapped = (np.linalg.inv(current) @ original @ homogeneous.T).T[:, :3]
    return mapped.tolist()
