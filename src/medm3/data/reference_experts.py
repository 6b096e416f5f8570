"""The real expert classes, fed with reference labels or precomputed probabilities.

Training data built from a dataset's ground-truth segmentations (or from CXR
probabilities computed elsewhere) must carry exactly the result text and
overlay the expert would produce. These subclasses replace only the
inference step of the real experts; validation, label naming, colours, slice
choice, overlay rendering and the result text run through the experts' own
code (``Expert.run``), so any change there reaches the training data too.

Each instance is for one image (the reference labels belong to it); nothing
is cached and no weights are loaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from medm3.experts.brats import BratsExpert
from medm3.experts.cxr import PrecomputedCXR
from medm3.experts.vista3d import Vista3DExpert

if TYPE_CHECKING:  # pragma: no cover
    from medm3.imaging.image import MedicalImage

#: ``weights_id`` of the reference experts (recorded in ``result.info``).
REFERENCE_WEIGHTS = "reference-labels"


class ReferenceVista3D(Vista3DExpert):
    """VISTA3D whose "network" returns the prompted structures of a reference label map.

    The label map must hold VISTA3D ids on the image's grid. For a prompt the
    result keeps the voxels of the expanded prompt ids (what the network's
    argmax over the prompted classes yields), exactly as the real expert's
    ``derive_from_cache`` subsets a cached ``everything`` result.

    Args:
        label_map: ``(X, Y, Z)`` VISTA3D label ids on the image's grid.
    """

    cache_results = False

    def __init__(self, label_map: np.ndarray) -> None:
        super().__init__(device="cpu")
        self._reference = np.asarray(label_map)

    def _setup(self) -> None:
        """Nothing to load."""

    def weights_id(self) -> str:
        """Identifier recorded instead of a weights version."""
        return REFERENCE_WEIGHTS

    def _segment(
        self,
        image: MedicalImage,
        volume: np.ndarray,
        prompt: Sequence[int],
        points: Any,
    ) -> tuple[np.ndarray, dict[str, Any], dict[str, float]]:
        from medm3.experts import vista3d_labels as labels

        wanted = labels.expand_prompt(prompt)
        subset = np.where(np.isin(self._reference, wanted), self._reference, 0).astype(np.uint8)
        return subset, {"label_source": "reference", "label_prompt": list(wanted)}, {}


class ReferenceBrats(BratsExpert):
    """The BraTS expert returning a reference segmentation (labels 0, 1, 2, 4).

    Args:
        label_map: BraTS label map on the grid of the four sequences.
    """

    cache_results = False

    def __init__(self, label_map: np.ndarray) -> None:
        super().__init__(device="cpu")
        self._reference = np.asarray(label_map, dtype=np.uint8)

    def _setup(self) -> None:
        """Nothing to load."""

    def weights_id(self) -> str:
        """Identifier recorded instead of a weights version."""
        return REFERENCE_WEIGHTS

    def segment(self, named: Mapping[str, MedicalImage]) -> np.ndarray:
        """The reference label map (the inputs are only checked, not used)."""
        return self._reference


#: The CXR expert returning given ensemble probabilities (one class with the experts').
FixedCXR = PrecomputedCXR
