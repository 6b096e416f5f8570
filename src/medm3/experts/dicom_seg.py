"""DICOM Segmentation (DICOM-SEG) export of expert label maps.

When an expert ran on a DICOM series, :func:`write_dicom_seg` turns its label
map (RAS+, on the loaded volume's grid) into a DICOM Segmentation object that
PACS and viewers (3D Slicer, OHIF) load next to the series:

* The source series is re-read from where the image came from (the folder, the
  ``.zip`` or the folder holding the listed files, recorded in
  :class:`~medm3.imaging.image.MedicalImage` ``source``/``metadata``), headers
  only, keeping the files whose SeriesInstanceUID is the image's.
* Every source slice is mapped back onto the label map: its pixel centres go
  through ImagePositionPatient/ImageOrientationPatient/PixelSpacing (LPS) to
  RAS and then to voxel indices with ``inv(affine)``, and the label map is
  sampled there (nearest neighbour, one vectorised step per slice). The files
  must match the loaded grid (within a quarter voxel), each slice of the
  volume must be covered by exactly one file; files lying wholly outside the
  volume (the rest of a folder when only some files were loaded) are ignored.
  Anything else means the series changed since it was read:
  :class:`~medm3.errors.InputError`.
* The label ids present are renumbered to consecutive segment numbers
  ``1..K`` in increasing id order; each segment's description
  (SegmentDescription, 0062,0006) keeps ``"<expert> label <id>"``.
* Segments carry the structure name as SegmentLabel and coded concepts: a
  name found in DICOM CID 7151 (segmentation property types; e.g. ``liver``,
  ``left kidney`` = Kidney + Left modifier) is coded as an Anatomical
  Structure; tumour/lesion words give a Morphologically Abnormal Structure
  (CID 7159 type when the name has one, else Neoplasm or Lesion); anything
  else is the generic Tissue/Tissue (SCT 85756007). Display colours are the
  overlay colours (:func:`medm3.imaging.overlay.label_color`).
* The object is a **BINARY** Segmentation (Segmentation Storage
  1.2.840.10008.5.1.4.1.1.66.4, one bit-packed frame per segment and source
  slice, empty frames omitted, explicit VR little endian): the form every
  SEG reader supports (dcmqi/3D Slicer, OHIF, dcm4che, highdicom). The newer
  LABELMAP form (Label Map Segmentation Storage, DICOM 2024) is smaller but
  not yet loaded by dcmqi/Slicer, so it is not used.
* Algorithm identification: name ``medm3 <expert>``, family Artificial
  Intelligence (DCM 123110), version ``medm3 <version>`` plus the expert's
  weights version when known; series description ``medm3 <expert>``; series
  number 1000 + the source's. Patient and study attributes are copied from
  the source (missing type 2 ones are left empty); the Frame of Reference UID
  is the source's, and a source without one is refused (a SEG must share it).
* The file is written atomically.

Only DICOM series read as volumes qualify (:func:`supports_dicom_seg`):
NIfTI/NRRD/PNG inputs, single 2D DICOM files and multi-frame (enhanced)
DICOM files get no SEG. A label map without any label cannot become a SEG
(a Segmentation needs at least one segment): :class:`~medm3.errors.InputError`.
``highdicom`` (the ``experts`` extra) is imported only when writing.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medm3.errors import InputError
from medm3.experts.dicom_export import (
    algorithm_version,
    derived_series_number,
    long_string,
    require_highdicom,
)
from medm3.experts.dicom_seg_frames import project_labels, read_series_headers

if TYPE_CHECKING:  # pragma: no cover
    from medm3.imaging.image import MedicalImage
    from medm3.imaging.limits import ReadLimits

#: Added to the source SeriesNumber to number the SEG series.
SERIES_NUMBER_OFFSET = 1000
#: Words that make a structure name a morphologically abnormal structure.
_ABNORMAL_WORDS = frozenset(
    {
        *("tumor", "tumour", "tumors", "tumours", "cancer", "cancers", "neoplasm", "lesion"),
        *("lesions", "metastasis", "metastases", "nodule", "nodules", "mass", "cyst", "cysts"),
        *("primaries", "edema", "oedema", "necrosis", "necrotic", "hemorrhage", "abscess"),
    }
)
_NEOPLASM_WORDS = frozenset(
    {"tumor", "tumour", "tumors", "tumours", "cancer", "cancers", "neoplasm", "primaries"}
)
_NOT_ABNORMAL_TYPES = frozenset({"Background", "Normal"})


def seg_file_name(expert: str) -> str:
    """File name of an expert's DICOM-SEG in an output folder: ``<expert>_seg.dcm``.

    Args:
        expert: Registry name of the expert.

    Returns:
        The file name.
    """
    return f"{expert}_seg.dcm"


def supports_dicom_seg(image: MedicalImage | None) -> bool:
    """Whether a DICOM-SEG can be written for a label map on ``image``'s grid.

    Args:
        image: The expert's input image (or None).

    Returns:
        True for a volume read from a DICOM series (``metadata['format'] ==
        'dicom-series'``) with a SeriesInstanceUID and a known container
        (folder, zip or files); False for anything else (NIfTI, PNG, a single
        DICOM file, an enhanced multi-frame file).
    """
    if image is None or not image.is_volume or image.channels != 1:
        return False
    md = image.metadata
    return (
        md.get("format") == "dicom-series"
        and bool(md.get("series_uid"))
        and md.get("container") in ("folder", "zip", "files")
    )


def write_dicom_seg(
    label_map: MedicalImage,
    label_names: Mapping[int, str],
    source_image: MedicalImage,
    path: str | os.PathLike[str],
    *,
    expert: str,
    expert_version: str | None = None,
    limits: ReadLimits | None = None,
) -> Path:
    """Write ``label_map`` as a DICOM Segmentation referencing the source series.

    See the module docstring for the mapping, coding and format choices.

    Args:
        label_map: Integer label map on ``source_image``'s grid (0 = background).
        label_names: Label id -> structure name (ids without a name are
            called ``label <id>``).
        source_image: The image the expert ran on, read from a DICOM series.
        path: Destination file (conventionally ``<expert>_seg.dcm``).
        expert: Registry name of the expert (algorithm name, series description).
        expert_version: Version of the expert's weights, if known.
        limits: Read limits for re-reading the series (default: from the environment).

    Returns:
        The written path.

    Raises:
        InputError: If the source is not a DICOM series, the label map is not
            on its grid, is not integer or has no label, the series cannot be
            re-read or no longer matches the image, or it has no Frame of
            Reference UID.
        MissingDependencyError: If highdicom is not installed.
    """
    from medm3.imaging.limits import resolve_limits
    from medm3.utils.atomic import atomic_path

    hd = require_highdicom("DICOM-SEG export")
    out = Path(path)
    _check_source(source_image, out)
    labels = _integer_labels(label_map, source_image, out)
    present = np.unique(labels)
    present = present[present != 0]
    if present.size == 0:
        raise InputError(
            "the label map has no labels, and a DICOM-SEG needs at least one segment", out
        )
    datasets = read_series_headers(source_image, resolve_limits(limits))
    frames, used = project_labels(labels, source_image.affine, datasets, present, out)
    descriptions = _segment_descriptions(hd, present, label_names, expert, expert_version)
    seg = _segmentation(hd, used, frames, descriptions, expert)
    with atomic_path(out) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    return out


def _check_source(source_image: MedicalImage, out: Path) -> None:
    """Refuse an input that is not a DICOM series read as a volume."""
    if not supports_dicom_seg(source_image):
        fmt = source_image.metadata.get("format") or "unknown format"
        kind = "volume" if source_image.is_volume else "2D image"
        raise InputError(
            f"a DICOM-SEG needs a DICOM series as the input image (this one is a {fmt} {kind})",
            out,
        )
    filled = source_image.metadata.get("filled_slices")
    if filled:
        raise InputError(
            f"no DICOM-SEG for a series loaded with --allow-gaps fill: its {len(filled)} "
            "filled slice(s) have no source image to reference (load it with --allow-gaps "
            "largest, or use the NIfTI label map)",
            out,
        )


def _segmentation(
    hd: Any, used: list[Any], frames: np.ndarray, descriptions: list[Any], expert: str
) -> Any:
    """The highdicom BINARY Segmentation of the frames (series numbered after the source's)."""
    from medm3 import __version__

    return hd.seg.Segmentation(
        source_images=used,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=derived_series_number(used[0], SERIES_NUMBER_OFFSET),
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medm3",
        manufacturer_model_name=long_string(f"medm3 {expert}"),
        software_versions=long_string(__version__),
        device_serial_number="none",
        series_description=long_string(f"medm3 {expert}"),
        content_label=_content_label(expert),
        content_description=long_string(f"medm3 {expert} segmentation"),
        omit_empty_frames=True,
    )


def _integer_labels(label_map: MedicalImage, source: MedicalImage, out: Path) -> np.ndarray:
    """The label array, checked to lie on the source grid and to hold integer ids >= 0."""
    if label_map.spatial_shape != source.spatial_shape or not np.allclose(
        label_map.affine, source.affine, atol=1e-3
    ):
        raise InputError(
            f"label map grid {label_map.spatial_shape} does not match the input image grid "
            f"{source.spatial_shape}",
            out,
        )
    labels = np.asarray(label_map.array)
    if labels.ndim != 3:
        raise InputError(f"a DICOM-SEG needs a 3D label map, got shape {labels.shape}", out)
    if labels.dtype == np.bool_:
        return labels.astype(np.uint8)
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or not np.array_equal(labels, np.rint(labels)):
            raise InputError("the label map holds non-integer values", out)
        labels = labels.astype(np.int64)
    elif labels.dtype.kind not in "iu":
        raise InputError(f"the label map has non-integer type {labels.dtype}", out)
    if labels.size and labels.min() < 0:
        raise InputError("the label map holds negative label ids", out)
    return labels


# ------------------------------------------------------------------ segment descriptions
def _content_label(expert: str) -> str:
    """A CS ContentLabel: upper case letters, digits, underscore; at most 16 characters."""
    label = re.sub(r"[^A-Z0-9_]", "_", expert.upper())[:16].strip("_")
    return label or "MEDM3"


def segment_codes(name: str) -> tuple[Any, Any, Any | None]:
    """Coded category, type and type modifier of a structure name.

    Args:
        name: The structure name (``"liver"``, ``"left kidney"``, ``"hepatic tumor"``).

    Returns:
        ``(category, type, modifier)`` as ``pydicom.sr.coding.Code``; the
        modifier (SCT Left/Right) is None unless the name starts with a side
        and the rest is a known type. Unknown names give Tissue/Tissue.
    """
    from pydicom.sr.codedict import codes

    words = [w.lower() for w in re.findall(r"[A-Za-z0-9]+", name)]
    modifier = None
    core = words
    if len(words) > 1 and words[0] in ("left", "right"):
        modifier = codes.SCT.Left if words[0] == "left" else codes.SCT.Right
        core = words[1:]
    key = "".join(w[:1].upper() + w[1:] for w in core)
    lesions, tissues, types = codes.CID7159, codes.CID7166, codes.CID7151
    abnormal_category = codes.CID7150.MorphologicallyAbnormalStructure
    if key and key in lesions and key not in _NOT_ABNORMAL_TYPES:
        return abnormal_category, getattr(lesions, key), modifier
    if any(w in _ABNORMAL_WORDS for w in words):
        for word in reversed(words):  # the head noun usually comes last
            cap = word[:1].upper() + word[1:]
            if cap in lesions and cap not in _NOT_ABNORMAL_TYPES:
                return abnormal_category, getattr(lesions, cap), None
        neoplasm = any(w in _NEOPLASM_WORDS for w in words)
        return abnormal_category, lesions.Neoplasm if neoplasm else lesions.Lesion, None
    if key and key in tissues:
        return codes.CID7150.Tissue, getattr(tissues, key), modifier
    if key and key in types:
        return codes.CID7150.AnatomicalStructure, getattr(types, key), modifier
    return codes.CID7150.Tissue, codes.SCT.Tissue, None


def _segment_descriptions(
    hd: Any,
    present: np.ndarray,
    label_names: Mapping[int, str],
    expert: str,
    expert_version: str | None,
) -> list[Any]:
    from pydicom.sequence import Sequence
    from pydicom.sr.codedict import codes

    from medm3.imaging.overlay import label_color

    version = algorithm_version(expert_version)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=long_string(f"medm3 {expert}"),
        family=codes.cid7162.ArtificialIntelligence,
        version=long_string(version),
    )
    names = {int(k): str(v) for k, v in label_names.items()}
    out = []
    for number, label_id in enumerate(int(v) for v in present):
        name = names.get(label_id) or f"label {label_id}"
        category, kind, modifier = segment_codes(name)
        desc = hd.seg.SegmentDescription(
            segment_number=number + 1,
            segment_label=long_string(name),
            segmented_property_category=category,
            segmented_property_type=kind,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            display_color=hd.color.CIELabColor.from_rgb(*label_color(label_id)),
        )
        desc.SegmentDescription = f"{expert} label {label_id}"[:1024]
        if modifier is not None:
            item = desc.SegmentedPropertyTypeCodeSequence[0]
            item.SegmentedPropertyTypeModifierCodeSequence = Sequence(
                [hd.sr.CodedConcept.from_code(modifier)]
            )
        out.append(desc)
    return out


__all__ = [
    "read_series_headers",
    "seg_file_name",
    "segment_codes",
    "supports_dicom_seg",
    "write_dicom_seg",
]
