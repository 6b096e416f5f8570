"""Builders and fixtures for the BraTS and CXR expert tests (imported by those tests).

The random-weight builders (a tiny ``brats_mri_segmentation`` bundle, a
torchxrayvision cache folder with all eight ensemble models) live in
:mod:`medm3.testing.experts` and are re-exported here; this module keeps the
test-only helpers and fixtures.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from medm3.imaging.image import MedicalImage
from medm3.testing.experts import BRATS_SHAPE, write_brats_bundle, write_random_xrv_weights

__all__ = ["BRATS_SHAPE", "write_brats_bundle", "write_random_xrv_weights"]


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
