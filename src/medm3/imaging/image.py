"""The :class:`MedicalImage` type every reader returns and every consumer takes.

Conventions (all readers follow them, all consumers may rely on them):

* **Volumes** (CT, MR, ...): ``array`` has shape ``(X, Y, Z)`` (or
  ``(X, Y, Z, C)`` for multi-channel data) in voxel order, reoriented so that
  the voxel axes point Right, Anterior, Superior (RAS+, nibabel's
  "closest canonical"). ``affine`` maps voxel indices to RAS+ world
  millimetres; ``spacing`` is the voxel size in mm along X, Y, Z.
* **2D images** (X-rays, photographs, single slices): ``array`` has shape
  ``(rows, cols)`` or ``(rows, cols, 3)`` in display order (row 0 at the top).
  ``spacing`` is ``(row_spacing, col_spacing)`` in mm when known (DICOM Pixel
  Spacing), else ``(1.0, 1.0)``; ``affine`` is a 4x4 matrix scaling pixel
  indices ``(row, col, 0)`` by that spacing.
* **Intensities** are physical where the format defines them: Hounsfield units
  for CT (DICOM rescale slope/intercept applied), raw values for MR. For
  MONOCHROME1 DICOM the values are inverted at load, so that higher always
  means brighter (bones bright on X-rays).
* **Modality** is a short code: ``CT``, ``MR``, ``XR`` (any projection
  radiograph: CR, DX, ...), ``PT``, ``US``, ``OT`` (other, e.g. pathology
  photographs). ``modality_source`` says where it came from: ``"dicom"`` (the
  file's tag), ``"caller"`` (given by the user) or ``"inferred"`` (guessed
  from the data; see :func:`medm3.imaging.modality.infer_modality`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

ModalitySource = Literal["dicom", "caller", "inferred", "header"]

#: Modality codes medm3 understands.
MODALITIES: tuple[str, ...] = ("CT", "MR", "XR", "PT", "US", "OT", "SEG")


@dataclass
class MedicalImage:
    """A medical image with its geometry, modality and metadata.

    Attributes:
        array: Pixel or voxel data (see the module docstring for axis order).
        spacing: Pixel/voxel size in mm, one value per spatial axis.
        affine: 4x4 voxel-index -> world-mm matrix (RAS+ for volumes).
        modality: Modality code, one of :data:`MODALITIES`.
        modality_source: Whether the modality is known (``"dicom"``,
            ``"caller"``, ``"header"``) or ``"inferred"``.
        source: The path(s) the image was read from, as given by the user.
        metadata: Format-specific facts: ``series_description``,
            ``series_uid``, ``original_orientation``, ``photometric``,
            ``window`` (``(width, level)`` from DICOM VOI tags) and so on.
    """

    array: np.ndarray
    spacing: tuple[float, ...]
    affine: np.ndarray
    modality: str
    modality_source: ModalitySource
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def is_volume(self) -> bool:
        """True for 3D volumes, False for 2D images."""
        return len(self.spacing) == 3

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """Shape of the spatial axes (channels excluded)."""
        return tuple(int(s) for s in self.array.shape[: len(self.spacing)])

    @property
    def channels(self) -> int:
        """Number of channels (1 for grayscale, 3 for RGB)."""
        return 1 if self.array.ndim == len(self.spacing) else int(self.array.shape[-1])

    @property
    def modality_inferred(self) -> bool:
        """True when the modality was guessed from the data rather than known."""
        return self.modality_source == "inferred"

    @property
    def orientation(self) -> str:
        """Axis codes of the array, e.g. ``"RAS"`` for volumes, ``"2D"`` for images."""
        if not self.is_volume:
            return "2D"
        import nibabel as nib

        return "".join(nib.orientations.aff2axcodes(self.affine))

    @property
    def value_range(self) -> tuple[float, float]:
        """Minimum and maximum finite intensity (NaN/inf ignored; NaN, NaN when none)."""
        if self.array.size == 0:
            return (0.0, 0.0)
        if self.array.dtype.kind != "f":
            return (float(np.min(self.array)), float(np.max(self.array)))
        finite = self.array[np.isfinite(self.array)]
        if finite.size == 0:
            return (float("nan"), float("nan"))
        return (float(finite.min()), float(finite.max()))

    @property
    def nonfinite_count(self) -> int:
        """Number of NaN or infinite values (0 for integer data)."""
        if self.array.dtype.kind != "f":
            return 0
        return int(self.array.size - np.count_nonzero(np.isfinite(self.array)))

    def with_array(self, array: np.ndarray, **changes: Any) -> MedicalImage:
        """Return a copy on the same grid holding ``array`` (e.g. a label map).

        Args:
            array: New data; its spatial shape must match this image's.
            **changes: Other fields to replace (``modality``, ``metadata`` ...).

        Returns:
            A new :class:`MedicalImage`; this one is not modified.

        Raises:
            ValueError: If the spatial shapes differ.
        """
        if tuple(array.shape[: len(self.spacing)]) != self.spatial_shape:
            raise ValueError(
                f"array shape {array.shape} does not match image grid {self.spatial_shape}"
            )
        return replace(self, array=array, **changes)

    def summary(self) -> dict[str, Any]:
        """Facts for `m3 info` and for the provenance trace, JSON-serialisable."""
        lo, hi = self.value_range
        facts = {
            "source": self.source,
            "modality": self.modality,
            "modality_source": self.modality_source,
            "modality_inferred": self.modality_inferred,
            "kind": "volume" if self.is_volume else "2d",
            "shape": list(self.array.shape),
            "spacing_mm": [round(float(s), 6) for s in self.spacing],
            "spacing_known": not self.metadata.get("spacing_assumed", False),
            "orientation": self.orientation,
            "original_orientation": self.metadata.get("original_orientation"),
            "dtype": str(self.array.dtype),
            "value_range": [lo, hi],
            "nonfinite_values": self.nonfinite_count,
            "series_description": self.metadata.get("series_description"),
            "format": self.metadata.get("format"),
        }
        for key in ("gaps", "filled_slices"):  # only after a gap policy acted (dicom_gaps)
            if self.metadata.get(key) is not None:
                facts[key] = self.metadata[key]
        return facts
