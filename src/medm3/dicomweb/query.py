"""QIDO-RS searches and the choice of one image series, before any download.

Search results are turned into ``pydicom`` datasets (``Dataset.from_json``)
so the rest of medm3 reads them like headers of local files. A series is
chosen with the same rules as for a local folder
(:func:`medm3.imaging.readers.dicom_scan.select_series`: index, UID or
description; a study with several image series and no choice is an error
that lists them). Only image series count: SR, presentation states, SEG and
other derived objects (:data:`NON_IMAGE_MODALITIES`) are never chosen, so a
study that already holds medm3 results still has one image series.

Before anything is downloaded, the instance-level metadata (Rows, Columns,
NumberOfFrames, SamplesPerPixel) is checked against the read limits of
:mod:`medm3.imaging.limits` (``max_files`` instances, ``max_pixels`` samples).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from medm3.dicomweb.client import PacsNotFoundError, server_call
from medm3.dicomweb.url import DicomwebRef
from medm3.errors import InputError
from medm3.imaging.limits import ReadLimits
from medm3.imaging.readers.dicom_pixels import NON_IMAGE_MODALITIES, looks_like_image
from medm3.imaging.readers.dicom_scan import SeriesGroup, select_series

#: Instance attributes asked for in the instance-level search.
INSTANCE_FIELDS = (
    "SOPClassUID",
    "Modality",
    "InstanceNumber",
    "Rows",
    "Columns",
    "NumberOfFrames",
    "SamplesPerPixel",
)
#: Series attributes asked for in the series-level search.
SERIES_FIELDS = ("SeriesDescription", "SeriesNumber", "Modality", "NumberOfSeriesRelatedInstances")
#: Study attributes asked for in the study-level search.
STUDY_FIELDS = (
    "PatientID",
    "PatientName",
    "StudyDate",
    "StudyDescription",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries",
)


def to_dataset(record: dict[str, Any]) -> Any:
    """A QIDO-RS JSON record as a ``pydicom.Dataset``."""
    from pydicom.dataset import Dataset

    return Dataset.from_json(record)


def text(ds: Any, keyword: str) -> str:
    """An attribute of a search result as text (``""`` when absent)."""
    value = ds.get(keyword)
    if value is None:
        return ""
    if not isinstance(value, (str, bytes)) and hasattr(value, "__iter__"):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def search_studies(
    client: Any,
    *,
    patient_id: str | None = None,
    modality: str | None = None,
    study_date: str | None = None,
    limit: int = 100,
) -> list[Any]:
    """Studies matching the filters (QIDO-RS ``/studies``).

    Args:
        client: A connected client (:func:`medm3.dicomweb.client.connect`).
        patient_id: PatientID to match (wildcards ``*``/``?`` allowed).
        modality: A modality the study must contain (``ModalitiesInStudy``).
        study_date: ``YYYYMMDD`` or a range ``YYYYMMDD-YYYYMMDD``.
        limit: Most studies returned.

    Returns:
        Study-level datasets.
    """
    filters = {}
    if patient_id:
        filters["PatientID"] = patient_id
    if modality:
        filters["ModalitiesInStudy"] = modality.upper()
    if study_date:
        filters["StudyDate"] = study_date.replace("-", "") if len(study_date) == 10 else study_date
    with server_call(client.base_url, "searching for studies"):
        found = client.search_for_studies(
            fields=list(STUDY_FIELDS), search_filters=filters, limit=limit
        )
    return [to_dataset(r) for r in found or []]


def search_series(client: Any, study_uid: str, modality: str | None = None) -> list[Any]:
    """The series of a study (QIDO-RS ``/studies/UID/series``), SeriesNumber order.

    Raises:
        InputError: No such study on the server (or a request failure).
    """
    filters = {"Modality": modality.upper()} if modality else {}
    with server_call(client.base_url, f"listing the series of study {study_uid}"):
        found = client.search_for_series(
            study_instance_uid=study_uid, fields=list(SERIES_FIELDS), search_filters=filters
        )
    series = [to_dataset(r) for r in found or []]
    if not series and not modality:
        raise PacsNotFoundError(f"no study {study_uid} on the DICOMweb server", client.base_url)
    return sorted(series, key=_series_order)


def _series_order(ds: Any) -> tuple[bool, int, str]:
    try:
        number = int(ds.get("SeriesNumber"))
    except (TypeError, ValueError):
        return (True, 0, text(ds, "SeriesInstanceUID"))
    return (False, number, text(ds, "SeriesInstanceUID"))


def search_instances(client: Any, study_uid: str, series_uid: str) -> list[Any]:
    """The instances of a series with the attributes needed to size it."""
    with server_call(client.base_url, f"listing the instances of series {series_uid}"):
        found = client.search_for_instances(
            study_instance_uid=study_uid,
            series_instance_uid=series_uid,
            fields=list(INSTANCE_FIELDS),
        )
    return [to_dataset(r) for r in found or []]


@dataclass
class SeriesPlan:
    """One image series chosen for download.

    Attributes:
        study_uid: StudyInstanceUID.
        series: The series-level search result.
        instances: The image instances (instance-level search results).
    """

    study_uid: str
    series: Any
    instances: list[Any]

    @property
    def series_uid(self) -> str:
        """SeriesInstanceUID of the chosen series."""
        return text(self.series, "SeriesInstanceUID")


class _RemoteGroup(SeriesGroup):
    """A series on the server, described like a local one (count from the QIDO result)."""

    count: int = 0

    def describe(self, index: int) -> str:
        n = self.count
        desc = f" '{self.description}'" if self.description else ""
        return f"[{index}] {self.uid}{desc} ({n} instance{'s' * (n != 1)})"


def _group(ds: Any) -> _RemoteGroup:
    try:
        number = int(ds.get("SeriesNumber"))
    except (TypeError, ValueError):
        number = None
    group = _RemoteGroup(
        uid=text(ds, "SeriesInstanceUID"), description=text(ds, "SeriesDescription"), number=number
    )
    try:
        group.count = int(ds.get("NumberOfSeriesRelatedInstances") or 0)
    except (TypeError, ValueError):
        group.count = 0
    group.items = [ds]  # type: ignore[list-item]
    return group


def choose_series(
    client: Any, ref: DicomwebRef, series: int | str | None, limits: ReadLimits
) -> SeriesPlan:
    """Pick the image series to read and check it against the limits, from metadata only.

    Args:
        client: A connected client.
        ref: The study (and maybe series) reference.
        series: The caller's ``--series`` (index, UID or description), or None.
        limits: Read limits; a series over them is refused before download.

    Returns:
        The plan.

    Raises:
        InputError: Unknown study/series, no image series, several series and
            no choice, non-image SOP classes, or a series over the limits.
    """
    assert ref.study_uid is not None
    where = ref.reference
    if ref.series_uid and series is not None and str(series).strip() != ref.series_uid:
        raise InputError("the reference already names a series; drop --series", where)
    all_series = search_series(client, ref.study_uid)
    if ref.series_uid:
        chosen = next(
            (s for s in all_series if text(s, "SeriesInstanceUID") == ref.series_uid), None
        )
        if chosen is None:
            listing = "; ".join(_group(s).describe(i) for i, s in enumerate(all_series))
            raise PacsNotFoundError(
                f"no series {ref.series_uid} in study {ref.study_uid} on the server; "
                f"it holds: {listing}",
                ref.root,
            )
    else:
        images = [s for s in all_series if text(s, "Modality").upper() not in NON_IMAGE_MODALITIES]
        if not images:
            kinds = sorted({text(s, "Modality") or "?" for s in all_series})
            raise InputError(
                f"study {ref.study_uid} holds no image series (only {', '.join(kinds)})", where
            )
        groups = [_group(s) for s in images]
        chosen = select_series(groups, series, where).items[0]
    return _plan(client, ref, chosen, limits)


def _plan(client: Any, ref: DicomwebRef, chosen: Any, limits: ReadLimits) -> SeriesPlan:
    assert ref.study_uid is not None
    uid = text(chosen, "SeriesInstanceUID")
    where = f"{ref.root}/studies/{ref.study_uid}/series/{uid}"
    instances = search_instances(client, ref.study_uid, uid)
    images = [ds for ds in instances if looks_like_image(ds)]
    if not images:
        classes = sorted({_sop_name(text(ds, "SOPClassUID")) for ds in instances}) or ["none"]
        raise InputError(
            f"series holds no images (SOP classes: {', '.join(classes)}); choose an image series",
            "dicomweb+" + where,
        )
    _check_limits(images, limits, "dicomweb+" + where)
    return SeriesPlan(study_uid=ref.study_uid, series=chosen, instances=images)


def _sop_name(uid: str) -> str:
    from pydicom.uid import UID

    name = UID(uid).name if uid else "unknown"
    return name if name != uid else uid


def _check_limits(instances: Sequence[Any], limits: ReadLimits, where: str) -> None:
    if len(instances) > limits.max_files:
        raise InputError(
            f"series has {len(instances):,} instances, more than the limit of "
            f"{limits.max_files:,} (MEDM3_MAX_FILES); refused before download",
            where,
        )
    total = 0
    for ds in instances:
        values = []
        for keyword, default in (("Rows", 0), ("Columns", 0), ("NumberOfFrames", 1)):
            try:
                values.append(int(ds.get(keyword) or default))
            except (TypeError, ValueError):
                values.append(default)
        try:
            samples = int(ds.get("SamplesPerPixel") or 1)
        except (TypeError, ValueError):
            samples = 1
        total += values[0] * values[1] * max(values[2], 1) * max(samples, 1)
    if total > limits.max_pixels:
        raise InputError(
            f"series declares {total:,} samples in {len(instances):,} instances, more than the "
            f"limit of {limits.max_pixels:,} (MEDM3_MAX_PIXELS); refused before download",
            where,
        )
