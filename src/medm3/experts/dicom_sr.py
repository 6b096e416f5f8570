"""DICOM Structured Report (TID 1500 Measurement Report) of expert measurements.

:func:`build_measurement_report` turns the per-structure rows of the measure
expert (:mod:`medm3.experts.measure`) into a Comprehensive 3D SR written with
highdicom, next to the DICOM-SEG that holds the structures
(:mod:`medm3.experts.dicom_seg`):

* one Volumetric ROI group (TID 1411) per structure with a voxel in the SEG,
  referencing its SEG segment (SOP Instance UID + segment number) and, through
  it, the source series; the finding type is the segment's coded property type;
* measurements (TID 300): Volume (SCT 118565006, ``ml``), Diameter
  (SCT 81827009, derivation Maximum, ``mm``: the largest axial Feret
  diameter), Mean (SCT 373098007) and Standard Deviation (SCT 386136009) of
  the intensities, in Hounsfield units (``[hnsf'U]``) for CT, ``1`` otherwise;
  each carries the algorithm identification ``medm3 <expert>`` and its version;
* the observer is a device: manufacturer ``medm3``, model ``medm3 <expert>``
  or the VLM's name when a VLM answered, software version ``medm3 <version>``;
* when a question and an answer are given, a "Qualitative Evaluations"
  container (UMLS C0034375) holds them as TEXT items: the question under the
  local code ``99MEDM3 QUESTION`` and the answer as Finding (DCM 121071);
* the SR's patient/study attributes are the source's, in the source study,
  series number 1000 + the source's + 1 (the SEG has 1000 + the source's).

highdicom is imported when called (the ``experts`` extra).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from medm3.errors import InputError
from medm3.experts.dicom_export import (
    algorithm_version,
    derived_series_number,
    long_string,
    require_highdicom,
)

#: Added to the source SeriesNumber to number the SR series.
SERIES_NUMBER_OFFSET = 1001
#: Local coding scheme for concepts DICOM has no code for.
LOCAL_SCHEME = "99MEDM3"


def _codes() -> dict[str, Any]:
    from pydicom.sr.coding import Code

    return {
        "ml": Code("ml", "UCUM", "milliliter"),
        "mm": Code("mm", "UCUM", "millimeter"),
        "hu": Code("[hnsf'U]", "UCUM", "Hounsfield unit"),
        "unitless": Code("1", "UCUM", "no units"),
        "volume": Code("118565006", "SCT", "Volume"),
        "diameter": Code("81827009", "SCT", "Diameter"),
        "maximum": Code("56851009", "SCT", "Maximum"),
        "mean": Code("373098007", "SCT", "Mean"),
        "std": Code("386136009", "SCT", "Standard Deviation"),
        "procedure": Code("363679005", "SCT", "Imaging procedure"),
        "qualitative": Code("C0034375", "UMLS", "Qualitative Evaluations"),
        "question": Code("QUESTION", LOCAL_SCHEME, "Question to the model"),
        "finding": Code("121071", "DCM", "Finding"),
    }


def segment_numbers(seg: Any) -> dict[int, int]:
    """Label id -> segment number of a medm3 DICOM-SEG (from SegmentDescription ``... label <id>``).

    Args:
        seg: The SEG dataset written by :func:`medm3.experts.dicom_seg.write_dicom_seg`.

    Returns:
        The mapping.
    """
    out = {}
    for item in seg.SegmentSequence:
        m = re.search(r"label (\d+)$", str(item.get("SegmentDescription", "")))
        if m:
            out[int(m.group(1))] = int(item.SegmentNumber)
    return out


def build_measurement_report(
    measurements: Sequence[Mapping[str, Any]],
    seg: Any,
    source_datasets: Sequence[Any],
    *,
    expert: str,
    expert_version: str | None = None,
    vlm: str | None = None,
    question: str | None = None,
    answer: str | None = None,
) -> Any:
    """Build the SR document (in memory) for measurements of the segments of ``seg``.

    Args:
        measurements: Rows of the measure expert (``label``, ``name``,
            ``volume_ml``, ``max_axial_diameter_mm``, ``mean_intensity``,
            ``std_intensity``, ``intensity_unit``, ``voxels``).
        seg: The DICOM-SEG dataset holding the structures (label id ->
            segment via :func:`segment_numbers`).
        source_datasets: Headers of the source series' instances (the SR is
            placed in their study; patient attributes are copied).
        expert: Registry name of the expert that produced the segmentation.
        expert_version: Its weights version, if known.
        vlm: Name of the VLM that answered the question, if any.
        question: The user's question (a TEXT item), if any.
        answer: The answer (a TEXT item), if any.

    Returns:
        A ``highdicom.sr.Comprehensive3DSR`` dataset.

    Raises:
        InputError: A measured structure is not a segment of ``seg``, or
            nothing at all to report.
        MissingDependencyError: highdicom is not installed.
    """
    hd = require_highdicom("DICOM SR export")
    c = _codes()
    algorithm = hd.sr.AlgorithmIdentification(
        name=long_string(f"medm3 {expert}"), version=long_string(algorithm_version(expert_version))
    )
    groups = _roi_groups(hd, c, measurements, seg, expert, algorithm)
    if not groups and not answer:
        raise InputError("nothing to report: no measured structure and no answer")
    report = hd.sr.MeasurementReport(
        observation_context=_observer(hd, vlm or f"medm3 {expert}"),
        procedure_reported=c["procedure"],
        imaging_measurements=groups or None,
    )
    if question or answer:
        _add_text(hd, report, c, question, answer)
    return hd.sr.Comprehensive3DSR(
        evidence=[*source_datasets, seg],
        content=report[0],
        series_number=derived_series_number(source_datasets[0], SERIES_NUMBER_OFFSET),
        series_instance_uid=hd.UID(),
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medm3",
        series_description=long_string(f"medm3 {expert} report"),
        institution_name=None,
        is_complete=True,
        is_final=False,
        is_verified=False,
    )


def _observer(hd: Any, name: str) -> Any:
    """Observation context: a device observer named ``name`` (the VLM or the expert)."""
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=hd.UID(),
        name=long_string(name),
        manufacturer_name="medm3",
        model_name=long_string(name),
    )
    return hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=hd.sr.CodedConcept.from_code(_device_code()),
            observer_identifying_attributes=device,
        )
    )


def _roi_groups(
    hd: Any,
    c: dict[str, Any],
    measurements: Sequence[Mapping[str, Any]],
    seg: Any,
    expert: str,
    algorithm: Any,
) -> list[Any]:
    """One TID 1411 volumetric group per measured structure present in ``seg``."""
    numbers = segment_numbers(seg)
    # (highdicom's ReferencedSegment.from_segmentation fails on a one-segment SEG, whose
    # segment identification is shared by all frames; the source series is referenced instead.)
    source_series = hd.sr.SourceSeriesForSegmentation(
        str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID)
    )
    groups = []
    for row in measurements:
        if not row.get("voxels"):
            continue  # a requested structure that is absent has no segment
        label = int(row["label"])
        if label not in numbers:
            raise InputError(f"structure {row.get('name')!r} (label {label}) is not in the SEG")
        number = numbers[label]
        segment = next(s for s in seg.SegmentSequence if int(s.SegmentNumber) == number)
        unit = c["hu"] if row.get("intensity_unit") == "HU" else c["unitless"]
        values = [
            (c["volume"], row.get("volume_ml"), c["ml"], None),
            (c["diameter"], row.get("max_axial_diameter_mm"), c["mm"], c["maximum"]),
            (c["mean"], row.get("mean_intensity"), unit, None),
            (c["std"], row.get("std_intensity"), unit, None),
        ]
        items = [
            hd.sr.Measurement(
                name=name, value=float(value), unit=u, derivation=d, algorithm_id=algorithm
            )
            for name, value, u, d in values
            if value is not None
        ]
        groups.append(
            hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=hd.UID(), identifier=long_string(f"{expert} {row.get('name', label)}")
                ),
                referenced_segment=hd.sr.ReferencedSegment(
                    sop_class_uid=str(seg.SOPClassUID),
                    sop_instance_uid=str(seg.SOPInstanceUID),
                    segment_number=number,
                    source_series=source_series,
                ),
                finding_type=hd.sr.CodedConcept.from_dataset(
                    segment.SegmentedPropertyTypeCodeSequence[0]
                ),
                algorithm_id=algorithm,
                measurements=items,
            )
        )
    return groups


def _device_code() -> Any:
    from pydicom.sr.codedict import codes

    return codes.DCM.Device


def _add_text(
    hd: Any, report: Any, c: dict[str, Any], question: str | None, answer: str | None
) -> None:
    """Append a Qualitative Evaluations container with the question and answer as TEXT."""
    from pydicom.sequence import Sequence as DicomSequence

    container = hd.sr.ContainerContentItem(
        name=c["qualitative"], relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    items = []
    for code, value in ((c["question"], question), (c["finding"], answer)):
        if value:
            items.append(
                hd.sr.TextContentItem(
                    name=code,
                    value=str(value)[: 1024 * 64],
                    relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
                )
            )
    container.ContentSequence = DicomSequence(items)
    root = report[0]
    root.ContentSequence.append(container)


__all__ = ["build_measurement_report", "segment_numbers"]
