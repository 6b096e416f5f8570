"""The expert protocol: what every expert model provides and returns.

An expert is a tool the VLM can call. It declares its trigger name, modality,
task, valid arguments and model-card text; ``setup()`` loads its weights once
per process; ``run()`` validates the inputs and arguments and returns an
:class:`ExpertResult`. Problems the model can react to (wrong modality, an
unknown argument, nothing found) raise :class:`ExpertError`; everything else
is a bug and propagates unchanged.

Expert modules import torch/MONAI only inside ``_setup``/``_run`` so that the
registry, the model cards and ``m3 experts list`` stay light.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from medm3 import prompts
from medm3.errors import MedM3Error
from medm3.experts.result import CacheLookup as CacheLookup
from medm3.experts.result import ExpertError as ExpertError
from medm3.experts.result import ExpertResult as ExpertResult
from medm3.experts.result import Overlay as Overlay
from medm3.experts.result import RunContext as RunContext
from medm3.experts.result import label_map_metadata as label_map_metadata
from medm3.utils.names import normalize_name, strip_arg

if TYPE_CHECKING:  # pragma: no cover
    from medm3.experts.cache import ResultCache
    from medm3.imaging.image import MedicalImage

_DIM_NAMES = {2: "2D image", 3: "3D volume"}


class Expert(ABC):
    """Base class of all experts.

    Subclasses set the class attributes and implement ``_setup`` and ``_run``.

    Args:
        device: ``"cuda"``, ``"cpu"``, ``"cuda:1"`` or ``None``/``"auto"`` (CUDA
            when available).
        weights: Local weights location overriding the catalogue (a bundle
            folder, a checkpoint file, a cache dir: each expert documents it).
    """

    #: Registry name, lower case (``vista3d``).
    name: ClassVar[str]
    #: Trigger name the VLM writes (``VISTA3D``).
    trigger: ClassVar[str]
    #: Modality as written in the model card (``CT``, ``MRI``, ``chest x-ray (CXR)``).
    card_modality: ClassVar[str]
    #: Image modality codes accepted (see :data:`medm3.imaging.MODALITIES`).
    modalities: ClassVar[tuple[str, ...]]
    #: ``segmentation``, ``classification``, ``measurement`` ...
    task: ClassVar[str]
    #: One-sentence description for the model card.
    overview: ClassVar[str]
    #: Published accuracy, as a short phrase for the model card.
    accuracy: ClassVar[str]
    #: Valid argument values listed in the model card (empty: takes none).
    valid_args: ClassVar[tuple[str, ...]] = ()
    #: Whether arguments outside ``valid_args`` may be accepted by ``parse_args``.
    open_args: ClassVar[bool] = False
    #: Named inputs; the first is the main image.
    inputs: ClassVar[tuple[str, ...]] = ("image",)
    #: Spatial dimensions accepted: ``(2,)`` images, ``(3,)`` volumes, ``()`` either.
    dimensions: ClassVar[tuple[int, ...]] = ()
    #: Catalogue entry with the weights (``None`` for experts without weights).
    weights_name: ClassVar[str | None] = None
    #: Whether the expert appears in the model cards shown to the VLM.
    in_model_cards: ClassVar[bool] = True
    #: Whether ``run`` uses the result cache (see :mod:`medm3.experts.cache`).
    cache_results: ClassVar[bool] = True

    def __init__(self, *, device: str | None = None, weights: str | Path | None = None) -> None:
        self.device_preference = device
        self.weights = Path(weights) if weights is not None else None
        #: Result cache used by :meth:`run`; None: the process-wide default.
        self.result_cache: ResultCache | None = None
        self._ready = False
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- text
    @classmethod
    def model_card(cls) -> str:
        """The expert's model-card line, generated from its attributes."""
        return prompts.model_card(
            cls.trigger,
            modality=cls.card_modality,
            task=cls.task,
            overview=cls.overview,
            accuracy=cls.accuracy,
            valid_args=cls.valid_args,
        )

    @classmethod
    def tool_schema(cls) -> dict[str, Any]:
        """An OpenAI ``tools`` entry for native tool calling."""
        props: dict[str, Any] = {}
        required: list[str] = []
        if cls.valid_args or cls.open_args:
            arg: dict[str, Any] = {"type": "string", "description": "What to run the expert for."}
            if cls.valid_args and not cls.open_args:
                arg["enum"] = list(cls.valid_args)
            elif cls.valid_args:
                arg["description"] += " One of: " + ", ".join(cls.valid_args) + ", or a name."
            props["args"] = arg
        return {
            "type": "function",
            "function": {
                "name": cls.trigger,
                "description": f"{cls.overview} Modality: {cls.card_modality}. Task: {cls.task}.",
                "parameters": {"type": "object", "properties": props, "required": required},
            },
        }

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """Facts for ``m3 experts info`` and ``GET /v1/experts``."""
        return {
            "name": cls.name,
            "trigger": cls.trigger,
            "modality": cls.card_modality,
            "modalities": list(cls.modalities),
            "task": cls.task,
            "overview": cls.overview,
            "accuracy": cls.accuracy,
            "valid_args": list(cls.valid_args),
            "open_args": cls.open_args,
            "inputs": list(cls.inputs),
            "weights": cls.weights_name,
            "model_card": cls.model_card(),
        }

    # ----------------------------------------------------------------- args
    def parse_args(self, args: str | None) -> str:
        """Validate and normalise an argument string.

        The default accepts ``valid_args`` as :func:`medm3.utils.names.normalize_name`
        matches them (case, ``_``/``-``, surrounding quotes and spaces ignored)
        and, for experts without arguments, only an empty string (``None`` and
        ``"none"`` count as empty).

        Raises:
            ExpertError: The argument is not valid; the message lists the valid ones.
        """
        text = strip_arg(args)
        key = normalize_name(text)
        if key in ("", "none", "args"):
            if self.valid_args and not self.open_args:
                return self.valid_args[0]
            return ""
        for valid in self.valid_args:
            if key == normalize_name(valid):
                return valid
        if not self.valid_args:
            raise ExpertError(f"expert {self.trigger} takes no arguments, got {text!r}")
        raise ExpertError(
            f"{text!r} is not a valid argument for {self.trigger}; "
            f"valid args are: {prompts.format_valid_args(self.valid_args)}"
        )

    # ---------------------------------------------------------------- setup
    @property
    def ready(self) -> bool:
        """Whether the weights are loaded."""
        return self._ready

    def setup(self) -> None:
        """Load weights once per instance (thread-safe, idempotent)."""
        if self._ready:
            return
        with self._lock:
            if not self._ready:
                self._setup()
                self._ready = True

    @abstractmethod
    def _setup(self) -> None:
        """Load the network(s). Called once, under a lock."""

    # ------------------------------------------------------------------ run
    def check_inputs(
        self, images: MedicalImage | Sequence[MedicalImage] | Mapping[str, MedicalImage]
    ) -> dict[str, MedicalImage]:
        """Map the given image(s) to the expert's named inputs and check them.

        A single image fills the first input; a sequence fills the inputs in
        order only when the expert has exactly that many; a mapping is matched
        by name (case-insensitive). Checks the declared requirements: required
        inputs (e.g. the four BraTS sequences), :attr:`modalities` and
        :attr:`dimensions`. Needs no weights: callers validate the input with
        it *before* resolving or loading any (``m3 experts run``, :meth:`run`).

        Raises:
            ExpertError: Missing/unknown inputs, an image of the wrong modality
                or dimensionality.
        """
        from medm3.imaging.image import MedicalImage

        if isinstance(images, MedicalImage):
            named = {self.inputs[0]: images}
        elif isinstance(images, Mapping):
            named = {str(k).lower(): v for k, v in images.items()}
        else:
            seq = list(images)
            if len(seq) == 1:
                named = {self.inputs[0]: seq[0]}
            elif len(self.inputs) > 1:
                raise ExpertError(
                    f"{self.trigger} needs its inputs named ({', '.join(self.inputs)}), "
                    f"got {len(seq)} unnamed images"
                )
            else:
                raise ExpertError(f"{self.trigger} takes one image, got {len(seq)}")
        unknown = sorted(set(named) - set(self.inputs))
        if unknown:
            raise ExpertError(
                f"{self.trigger} has no input named {', '.join(unknown)}; "
                f"its inputs are: {', '.join(self.inputs)}"
            )
        missing = [n for n in self.required_inputs() if n not in named]
        if missing:
            raise ExpertError(f"{self.trigger} needs the input(s): {', '.join(missing)}")
        for key, image in named.items():
            if self.modalities and image.modality not in self.modalities:
                how = "inferred" if image.modality_inferred else "given"
                raise ExpertError(
                    f"{self.trigger} works on {'/'.join(self.modalities)} images, but {key} "
                    f"({image.source}) is {image.modality} ({how}); "
                    "pass the modality explicitly if this is wrong"
                )
            dims = len(image.spacing)
            if self.dimensions and dims not in self.dimensions:
                want = " or ".join(
                    f"{d}D {self.card_modality} {'volume' if d == 3 else 'image'}"
                    for d in self.dimensions
                )
                raise ExpertError(
                    f"{self.trigger} needs a {want}, but {key} ({image.source}) is a "
                    f"{_DIM_NAMES.get(dims, f'{dims}D image')}"
                )
        return named

    def required_inputs(self) -> tuple[str, ...]:
        """Inputs that must be given (default: all)."""
        return self.inputs

    def run(
        self,
        images: MedicalImage | Sequence[MedicalImage] | Mapping[str, MedicalImage],
        args: str | None = "",
        *,
        context: RunContext | None = None,
        use_cache: bool = True,
    ) -> ExpertResult:
        """Run the expert, answering from the result cache when it can.

        Cache (see :mod:`medm3.experts.cache`): a hit returns the stored result
        with ``info["cache"] = "hit"`` (``info["cache_tier"]``: ``memory`` or
        ``disk``) without calling ``setup``/``_run``; else
        :meth:`derive_from_cache` may build it from another cached result
        (``"derived"``, kept in memory only); else the expert runs, and the
        result is stored unless ``info["cacheable"] is False`` (``"miss"``).
        ``"off"`` when the cache is bypassed.

        Args:
            images: The input image(s) (see :meth:`check_inputs`).
            args: Argument string as written in the trigger.
            context: Conversation context (earlier results, preferred slice).
            use_cache: False bypasses the cache (so does ``MEDM3_NO_RESULT_CACHE=1``
                and ``cache_results = False`` on the class).

        Returns:
            The result, with ``timings["setup"]``, ``timings["run"]`` and
            ``timings["total"]`` filled in (a hit: ``timings["cache"]`` and
            ``timings["total"]``, the original timings in ``info["cached_timings"]``).

        Raises:
            ExpertError: A problem the caller (or the VLM) can fix.
        """
        start = time.perf_counter()
        named = self.check_inputs(images)
        norm_args = self.parse_args(args)
        ctx = context or RunContext()
        key_for = self._cache_keys(named, ctx) if use_cache else None
        cache = self._cache() if key_for is not None else None
        key = key_for(norm_args) if key_for is not None else None
        if cache is not None and key_for is not None and key is not None:
            found = cache.get(key)
            if found is not None:
                result, tier = found
                result.info["cached_timings"] = dict(result.timings)
                result.timings = {"cache": time.perf_counter() - start}
                return self._finish(result, start, "hit", key, tier=tier)

            def lookup(other: str, _key_for: Callable[[str], str] = key_for) -> ExpertResult | None:
                with contextlib.suppress(ExpertError):
                    other = self.parse_args(other)
                hit = cache.get(_key_for(other))
                return hit[0] if hit is not None else None

            derived = self.derive_from_cache(lookup, named, norm_args, context=ctx)
            if derived is not None:
                if derived.info.get("cacheable") is not False:
                    cache.put(key, derived, disk=False)
                derived.timings["derive"] = time.perf_counter() - start
                return self._finish(derived, start, "derived", key)

        t0 = time.perf_counter()
        self.setup()
        t1 = time.perf_counter()
        result = self._run(named, norm_args, ctx)
        t2 = time.perf_counter()
        result.timings.setdefault("setup", t1 - t0)
        result.timings.setdefault("run", t2 - t1)
        result.timings["total"] = t2 - start
        if cache is None or key is None:
            return self._finish(result, start, "off", None)
        if result.info.get("cacheable") is not False:
            cache.put(key, result)
        return self._finish(result, start, "miss", key)

    def _finish(
        self,
        result: ExpertResult,
        start: float,
        status: str,
        key: str | None,
        *,
        tier: str | None = None,
    ) -> ExpertResult:
        result.trigger = result.trigger or self.trigger  # stored on the result, no registry lookup
        result.timings["total"] = time.perf_counter() - start
        result.info["cache"] = status
        if key is not None:
            result.info["cache_key"] = key
        if tier is not None:
            result.info["cache_tier"] = tier
        return result

    def _cache(self) -> ResultCache:
        from medm3.experts.cache import default_cache

        return self.result_cache if self.result_cache is not None else default_cache()

    def _cache_keys(
        self, inputs: dict[str, MedicalImage], context: RunContext
    ) -> Callable[[str], str] | None:
        """``args -> cache key`` for these inputs, or None when this call is not cached."""
        from medm3.experts.cache import cache_disabled, cache_key, hash_image

        if not self.cache_results or cache_disabled():
            return None
        extra = self.cache_context(inputs, context)
        if extra is None:
            return None
        try:
            json.dumps(extra, sort_keys=True)
            weights = self.weights_id()
        except (TypeError, ValueError, OSError, MedM3Error):
            return None  # not serialisable / weights missing: run uncached (setup reports it)
        hashes = {name: hash_image(image) for name, image in inputs.items()}
        return lambda a: cache_key(self.name, a, weights, hashes, extra)

    def weights_id(self) -> str:
        """A string identifying the loaded weights, part of the result-cache key.

        Experts with weights override this (e.g. with
        :func:`medm3.experts.catalogue.weights_version` of their weights folder)
        so that new weights never serve stale results. It must not load them.
        """
        return "none"

    def cache_context(
        self, inputs: dict[str, MedicalImage], context: RunContext
    ) -> dict[str, Any] | None:
        """Context facts that change the result and so belong in the cache key.

        The default: the overlay plane and slice and ``context.options`` (the
        call is not cached when the options are not JSON-serialisable). Override
        to add facts (or return None to never cache calls like this one).

        Args:
            inputs: The checked inputs.
            context: The run context.
        """
        return {
            "plane": context.plane,
            "slice_index": context.slice_index,
            "options": dict(context.options),
        }

    def derive_from_cache(
        self,
        lookup: CacheLookup,
        inputs: dict[str, MedicalImage],
        args: str,
        context: RunContext | None = None,
    ) -> ExpertResult | None:
        """Build the result from another cached result of the same image, if possible.

        Called on a cache miss, before ``setup``. ``lookup(other_args)`` returns
        the cached result for the same inputs, weights and context with
        ``other_args`` (normalised with :meth:`parse_args`), or None; it never
        runs the expert. VISTA3D uses it to answer a label-group request from a
        cached ``everything`` result. Return None (the default) to run normally.
        A derived result is cached in memory only (unless its
        ``info["cacheable"]`` is False) and reported as ``info["cache"] = "derived"``.

        Args:
            lookup: Finds cached results with other args.
            inputs: The checked inputs.
            args: The normalised args of this call.
            context: The run context (always passed by :meth:`run`).
        """
        return None

    @abstractmethod
    def _run(self, inputs: dict[str, MedicalImage], args: str, context: RunContext) -> ExpertResult:
        """Compute the result for validated inputs and a normalised argument."""
