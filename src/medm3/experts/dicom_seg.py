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
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medm3.errors import InputError, MissingDependencyError

if TYPE_CHECKING:  # pragma: no cover
    from medm3.imaging.image import MedicalImage
    from medm3.imaging.limits import ReadLimits

#: Source files may lie this far (in voxels) from the loaded grid.
GRID_TOLERANCE_VOXELS = 0.25
#: Added to the source SeriesNumber to number the SEG series.
SERIES_NUMBER_OFFSET = 1000
#: Patient/study attributes highdicom reads from the source (type 2: may be empty).
_TYPE2_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)
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
    from medm3 import __version__
    from medm3.imaging.limits import resolve_limits
    from medm3.utils.atomic import atomic_path

    try:
        import highdicom as hd
    except ImportError:
        raise MissingDependencyError("highdicom", "experts", "DICOM-SEG export") from None
    out = Path(path)
    if not supports_dicom_seg(source_image):
        fmt = source_image.metadata.get("format") or "unknown format"
        kind = "volume" if source_image.is_volume else "2D image"
        raise InputError(
            f"a DICOM-SEG needs a DICOM series as the input image (this one is a {fmt} {kind})",
            out,
        )
    labels = _integer_labels(label_map, source_image, out)
    present = np.unique(labels)
    present = present[present != 0]
    if present.size == 0:
        raise InputError(
            "the label map has no labels, and a DICOM-SEG needs at least one segment", out
        )
    datasets = read_series_headers(source_image, resolve_limits(limits))
    frames, used = _project(labels, source_image.affine, datasets, present, out)
    descriptions = _segment_descriptions(hd, present, label_names, expert, expert_version)
    src = used[0]
    try:
        number = int(src.get("SeriesNumber")) + SERIES_NUMBER_OFFSET
    except (TypeError, ValueError):
        number = SERIES_NUMBER_OFFSET
    seg = hd.seg.Segmentation(
        source_images=used,
        pixel_array=frames,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=min(number, 2**31 - 1),
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medm3",
        manufacturer_model_name=_lo(f"medm3 {expert}"),
        software_versions=_lo(__version__),
        device_serial_number="none",
        series_description=_lo(f"medm3 {expert}"),
        content_label=_content_label(expert),
        content_description=_lo(f"medm3 {expert} segmentation"),
        omit_empty_frames=True,
    )
    with atomic_path(out) as tmp:
        seg.save_as(tmp, enforce_file_format=True)
    return out


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


# ------------------------------------------------------------------ series re-reading
def _candidates(image: MedicalImage, limits: ReadLimits) -> Iterator[tuple[str, Any]]:
    """``(label, path or bytes)`` of every file that may belong to the series."""
    from medm3.imaging.archive import open_zip
    from medm3.imaging.readers.dicom_series import NON_DICOM_SUFFIXES

    where = Path(image.source)
    listed = image.metadata.get("source_files")
    if isinstance(listed, (list, tuple)) and listed:
        for name in listed:
            yield str(name), Path(name)
        return
    if image.metadata.get("container") == "zip":
        if not where.is_file():
            raise InputError("the DICOM archive the image was read from is gone", where)
        with open_zip(where, limits) as members:
            for m in members:
                skip = Path(m.name).suffix.lower() in NON_DICOM_SUFFIXES
                if skip and m.read(132)[128:132] != b"DICM":
                    continue
                yield f"{where}!{m.name}", m.read()
        return
    if not where.is_dir():
        raise InputError("the DICOM series folder the image was read from is gone", where)
    count = 0
    for root, dirs, names in os.walk(where):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            count += 1
            if count > limits.max_files:
                raise InputError(
                    f"folder holds more than {limits.max_files:,} files (MEDM3_MAX_FILES)", where
                )
            p = Path(root) / name
            if name.startswith(".") or p.suffix.lower() in NON_DICOM_SUFFIXES:
                try:
                    with open(p, "rb") as fh:
                        if fh.read(132)[128:132] != b"DICM":
                            continue
                except OSError:
                    continue
            yield str(p), p


def read_series_headers(image: MedicalImage, limits: ReadLimits | None = None) -> list[Any]:
    """Re-read the headers of the DICOM series ``image`` was loaded from.

    Args:
        image: A volume read from a DICOM series (see :func:`supports_dicom_seg`).
        limits: Read limits (default: from the environment).

    The files are looked for in ``metadata['source_files']`` when a reader
    recorded that list, else in the ``.zip`` (container ``zip``) or the
    folder ``image.source`` (containers ``folder`` and ``files``, searched
    recursively like the reader does).

    Returns:
        The ``pydicom.Dataset`` headers (no pixel data) of the image files
        whose SeriesInstanceUID is ``image.metadata['series_uid']``, in
        discovery order.

    Raises:
        InputError: If the folder/archive is gone or holds no file of the series.
    """
    from medm3.imaging.limits import resolve_limits
    from medm3.imaging.readers.dicom_pixels import looks_like_image, read_dataset

    uid = str(image.metadata.get("series_uid") or "")
    found = []
    for label, data in _candidates(image, resolve_limits(limits)):
        try:
            ds = read_dataset(data, label, header_only=True)
        except InputError:
            continue
        if str(ds.get("SeriesInstanceUID", "") or "").strip() == uid and looks_like_image(ds):
            found.append(ds)
    if not found:
        raise InputError(f"no file of DICOM series {uid} is left here", image.source)
    return found


# ------------------------------------------------------------------ geometry
def _slice_to_voxel(ds: Any, inverse: np.ndarray, where: Path) -> np.ndarray:
    """3x3 matrix mapping ``(col, row, 1)`` of a source slice to label-map voxel indices."""
    try:
        ipp = np.asarray([float(v) for v in ds.ImagePositionPatient], dtype=np.float64)
        iop = np.asarray([float(v) for v in ds.ImageOrientationPatient], dtype=np.float64)
        row_sp, col_sp = (float(v) for v in ds.PixelSpacing)
    except (AttributeError, TypeError, ValueError) as exc:
        raise InputError(
            f"a source file has no usable plane geometry ({type(exc).__name__}: {exc})", where
        ) from None
    if ipp.shape != (3,) or iop.shape != (6,):
        raise InputError("a source file has malformed ImagePosition/OrientationPatient", where)
    lps = np.zeros((4, 3))
    lps[:3, 0] = iop[:3] * col_sp  # along a row: column index
    lps[:3, 1] = iop[3:] * row_sp  # down a column: row index
    lps[:3, 2] = ipp
    lps[3, 2] = 1.0
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return (inverse @ ras)[:3]


def _project(
    labels: np.ndarray,
    affine: np.ndarray,
    datasets: list[Any],
    present: np.ndarray,
    where: Path,
) -> tuple[np.ndarray, list[Any]]:
    """Sample the label map on every source slice; return (frames, their datasets).

    Frames hold segment numbers ``1..K`` (``present`` renumbered), in the order
    of the returned datasets.
    """
    shape = np.asarray(labels.shape)
    inverse = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    lut = np.concatenate([[0], present])
    dtype = np.uint8 if present.size < 256 else np.uint16
    frames: list[np.ndarray] = []
    used: list[Any] = []
    covered: dict[tuple[int, int], str] = {}
    for ds in datasets:
        rows, cols = int(ds.Rows), int(ds.Columns)
        m = _slice_to_voxel(ds, inverse, where)
        r = np.arange(rows, dtype=np.float64)[:, None]
        c = np.arange(cols, dtype=np.float64)[None, :]
        vox = [m[a, 0] * c + m[a, 1] * r + m[a, 2] for a in range(3)]
        idx = [np.rint(v).astype(np.int64) for v in vox]
        inside = np.ones((rows, cols), dtype=bool)
        for a in range(3):
            inside &= (idx[a] >= 0) & (idx[a] < shape[a])
        if not inside.any():
            continue  # a file of the series that was not loaded (outside the volume)
        name = str(ds.get("SOPInstanceUID", "?"))
        off = max(float(np.max(np.abs(v - i))) for v, i in zip(vox, idx, strict=True))
        if not inside.all() or off > GRID_TOLERANCE_VOXELS:
            raise InputError(
                f"source file {name} does not lie on the loaded image grid (the series "
                "changed since it was read?)",
                where,
            )
        # The slice axis: the voxel axis that stays constant across the frame.
        flat = [a for a in range(3) if np.all(idx[a] == idx[a][0, 0])]
        if len(flat) != 1:
            raise InputError(f"source file {name} is not a slice of the loaded volume", where)
        key = (flat[0], int(idx[flat[0]][0, 0]))
        if key in covered:
            raise InputError(
                f"source files {covered[key]} and {name} lie at the same slice position", where
            )
        covered[key] = name
        sampled = labels[idx[0], idx[1], idx[2]]
        frames.append(np.searchsorted(lut, sampled).astype(dtype))
        used.append(ds)
    axes = {a for a, _ in covered}
    if len(axes) != 1 or len(covered) != int(shape[next(iter(axes))]):
        n = int(shape[next(iter(axes))]) if len(axes) == 1 else "?"
        raise InputError(
            f"the source series has {len(covered)} file(s) on the loaded volume but the "
            f"volume has {n} slices (the series changed since it was read?)",
            where,
        )
    _check_headers(used, where)
    return np.stack(frames), used


def _check_headers(datasets: list[Any], where: Path) -> None:
    """Refuse sources without the UIDs a SEG must reference; fill empty type 2 attributes."""
    for keyword in ("StudyInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        if any(not str(ds.get(keyword, "") or "").strip() for ds in datasets):
            raise InputError(
                f"a source file has no {keyword}; a DICOM-SEG cannot reference it", where
            )
    frames_of_reference = {str(ds.get("FrameOfReferenceUID", "") or "").strip() for ds in datasets}
    if "" in frames_of_reference:
        raise InputError(
            "the source series has no FrameOfReferenceUID, which a DICOM-SEG must share with "
            "it to be placed on the images",
            where,
        )
    if len(frames_of_reference) > 1:
        raise InputError("the source series spans several FrameOfReferenceUIDs", where)
    for ds in datasets:
        for keyword in _TYPE2_KEYWORDS:
            if keyword not in ds:
                setattr(ds, keyword, "")


# ------------------------------------------------------------------ segment descriptions
def _lo(text: str) -> str:
    """A value fit for a LO element: no backslash/control characters, at most 64 characters."""
    clean = re.sub(r"[\\\x00-\x1f\x7f]", " ", str(text)).strip()
    return clean[:64] or "unnamed"


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

    from medm3 import __version__
    from medm3.imaging.overlay import label_color

    version = f"medm3 {__version__}" + (f", weights {expert_version}" if expert_version else "")
    algorithm = hd.AlgorithmIdentificationSequence(
        name=_lo(f"medm3 {expert}"),
        family=codes.cid7162.ArtificialIntelligence,
        version=_lo(version),
    )
    names = {int(k): str(v) for k, v in label_names.items()}
    out = []
    for number, label_id in enumerate(int(v) for v in present):
        name = names.get(label_id) or f"label {label_id}"
        category, kind, modifier = segment_codes(name)
        desc = hd.seg.SegmentDescription(
            segment_number=number + 1,
            segment_label=_lo(name),
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
