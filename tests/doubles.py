"""Test doubles shared by several test packages: tiny experts and images.

The doubles implement the real :class:`~medm3.experts.base.Expert` protocol
with trivial computations, so the protocol, registry, result cache and agent
loop can be tested without any network or weights. They live only in the tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from medm3 import prompts
from medm3.experts.base import Expert, ExpertResult, Overlay, RunContext
from medm3.imaging.image import MedicalImage


def volume(
    array: np.ndarray | None = None,
    *,
    shape: tuple[int, ...] = (8, 8, 4),
    spacing: tuple[float, ...] = (1.0, 1.0, 2.0),
    modality: str = "CT",
    seed: int = 0,
    source: str = "synthetic.nii.gz",
) -> MedicalImage:
    """A small RAS+ volume (random HU-like values unless ``array`` is given)."""
    if array is None:
        array = np.random.default_rng(seed).integers(-200, 200, size=shape).astype(np.int16)
    affine = np.diag([*spacing, 1.0]).astype(np.float64)
    return MedicalImage(
        array=array,
        spacing=tuple(float(s) for s in spacing),
        affine=affine,
        modality=modality,
        modality_source="caller",
        source=source,
    )


def xray(shape: tuple[int, int] = (16, 16)) -> MedicalImage:
    """A small 2D X-ray image."""
    return MedicalImage(
        array=np.zeros(shape, np.uint8),
        spacing=(1.0, 1.0),
        affine=np.eye(4),
        modality="XR",
        modality_source="inferred",
        source="cxr.png",
    )


class FakeSegExpert(Expert):
    """Test double: 'segments' positive voxels as 1 (bright) and the rest as 2 (dark)."""

    name = "fakeseg"
    trigger = "FAKESEG"
    card_modality = "CT"
    modalities = ("CT",)
    task = "segmentation"
    overview = "a test double that thresholds the image"
    accuracy = "not applicable"
    valid_args = ("everything", "bright", "dark")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.setup_calls = 0
        self.run_calls = 0
        self.version = "v1"
        self.extra_info: dict[str, Any] = {}

    def weights_id(self) -> str:
        return self.version

    def _setup(self) -> None:
        self.setup_calls += 1

    def _run(self, inputs: dict[str, MedicalImage], args: str, context: RunContext) -> ExpertResult:
        self.run_calls += 1
        image = inputs["image"]
        labels = np.where(image.array > 0, 1, 2).astype(np.uint8)
        keep = {"everything": (1, 2), "bright": (1,), "dark": (2,)}[args]
        labels[~np.isin(labels, keep)] = 0
        names = {i: n for i, n in {1: "bright", 2: "dark"}.items() if i in keep}
        picture = Image.new("RGB", (6, 4), (10 * self.run_calls, 20, 30))
        picture.info["medm3"] = {"plane": context.plane, "index": 0}
        return ExpertResult(
            expert=self.name,
            args=args,
            text=prompts.segmentation_text([("red", n) for n in names.values()]),
            overlays=[Overlay("fakeseg_axial_0", picture, "axial", 0, "axial slice 0")],
            label_map=image.with_array(labels, modality="OT"),
            label_names=names,
            measurements=[{"label": 1, "value": np.float64(1.5)}],
            info={"device": "cpu", **self.extra_info},
        )


class DerivingFakeExpert(FakeSegExpert):
    """Double that answers 'bright'/'dark' from a cached 'everything' result."""

    name = "derivingfake"
    trigger = "DERIVINGFAKE"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lookups: list[str] = []

    def derive_from_cache(
        self,
        lookup: Callable[[str], ExpertResult | None],
        inputs: dict[str, MedicalImage],
        args: str,
        context: RunContext | None = None,
    ) -> ExpertResult | None:
        if args == "everything":
            return None
        self.lookups.append("everything")
        cached = lookup("EVERYTHING")  # lookup normalises its argument
        if cached is None or cached.label_map is None:
            return None
        keep = 1 if args == "bright" else 2
        labels = np.where(cached.label_map.array == keep, keep, 0).astype(np.uint8)
        cached.label_map = cached.label_map.with_array(labels)
        cached.args = args
        cached.label_names = {keep: args}
        return cached


class PairExpert(Expert):
    """Double with two named MR inputs and no arguments."""

    name = "pairfake"
    trigger = "PAIRFAKE"
    card_modality = "MRI"
    modalities = ("MR",)
    task = "segmentation"
    overview = "a two-input test double"
    accuracy = "not applicable"
    inputs = ("t1", "t2")

    def _setup(self) -> None:
        pass

    def _run(self, inputs: dict[str, MedicalImage], args: str, context: RunContext) -> ExpertResult:
        return ExpertResult(expert=self.name, args=args, text=",".join(sorted(inputs)))
