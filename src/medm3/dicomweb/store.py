"""Write expert results back to the PACS with STOW-RS: a DICOM-SEG and a DICOM SR.

:func:`build_result_objects` makes both objects in memory before anything is
sent: the SEG of the label map (:func:`medm3.experts.dicom_seg.write_dicom_seg`,
via a temporary file) and the TID 1500 SR of its measurements, the question
and the answer (:func:`medm3.experts.dicom_sr.build_measurement_report`).
When the result has no measurements (a segmentation expert), the structures
are measured with the measure expert's code first, so the SR always carries
volumes, diameters and intensity statistics.

:func:`store_objects` sends both in **one** STOW-RS request to the source
study. All or nothing: when the server reports any instance as failed (or the
request fails after it may have stored something), the instances of this
request that did get stored are deleted again (what the server reports is
checked with a QIDO-RS search, since some servers report instances that a
filter dropped as stored): first with the DICOMweb
``DELETE`` transaction, else, for Orthanc (whose DICOMweb plug-in has no
DELETE), through Orthanc's REST API beside the DICOMweb root. If even that is
impossible the error says exactly which SOP Instance UIDs remain.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medm3.dicomweb.client import connect, server_call
from medm3.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from medm3.experts.base import ExpertResult
    from medm3.imaging.image import MedicalImage


@dataclass(frozen=True)
class StoredObject:
    """One instance stored on the server."""

    kind: str  # "seg" or "sr"
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str


def dicomweb_source(image: MedicalImage) -> dict[str, str]:
    """The DICOMweb origin of an image (``metadata['dicomweb']``).

    Raises:
        InputError: The image was not read from a DICOMweb server.
    """
    origin = image.metadata.get("dicomweb")
    if not isinstance(origin, dict):
        raise InputError(
            "storing results needs an image read from a DICOMweb server "
            "(dicomweb+https://HOST/ROOT/studies/UID)",
            image.source,
        )
    return origin


def result_label_map(
    result: ExpertResult, image: MedicalImage, mask: MedicalImage | None
) -> tuple[np.ndarray, dict[int, str]]:
    """The label map to store: the result's, else the mask's measured labels."""
    from medm3.imaging.overlay import check_mask

    if result.label_map is not None:
        labels = check_mask(image, result.label_map)
        names = dict(result.label_names)
    elif mask is not None:
        labels = check_mask(image, mask)
        names = dict(result.label_names)
        measured = [int(r["label"]) for r in result.measurements if r.get("voxels")]
        labels = np.where(np.isin(labels, measured), labels, 0)
    else:
        raise InputError(
            f"nothing to store: the {result.expert} result has no segmentation "
            "(--store writes a DICOM-SEG and an SR of its measurements)"
        )
    return labels, {int(k): str(v) for k, v in names.items()}


def build_result_objects(
    result: ExpertResult,
    image: MedicalImage,
    *,
    mask: MedicalImage | None = None,
    vlm: str | None = None,
    question: str | None = None,
    answer: str | None = None,
) -> tuple[Any, Any]:
    """The DICOM-SEG and the SR (pydicom datasets) of an expert result on a DICOMweb image.

    Args:
        result: The expert result (a segmentation, or measure run with ``mask``).
        image: The image the expert ran on, read from a DICOMweb server.
        mask: The mask the measure expert measured, when it had no label map of its own.
        vlm: The VLM's name when a VLM answered a question.
        question: The question asked, if any.
        answer: The answer given, if any.

    Returns:
        ``(seg, sr)``.

    Raises:
        InputError: The image is not from DICOMweb, nothing to store, or the
            SEG/SR cannot be built.
    """
    import pydicom

    from medm3.experts.dicom_seg import read_series_headers, write_dicom_seg
    from medm3.experts.dicom_sr import build_measurement_report
    from medm3.experts.measure import measure_structures

    origin = dicomweb_source(image)
    labels, names = result_label_map(result, image, mask)
    present = [int(v) for v in np.unique(labels) if v > 0]
    if not present:
        raise InputError(f"nothing to store: the {result.expert} result segments nothing")
    rows = [r for r in result.measurements if r.get("voxels")]
    if not rows:
        rows = measure_structures(image, labels, [(i, names.get(i, f"label {i}")) for i in present])
    version = result.info.get("weights_version") or result.info.get("bundle_version")
    with tempfile.TemporaryDirectory(prefix="m3-stow-") as tmp:
        path = Path(tmp) / "seg.dcm"
        write_dicom_seg(
            image.with_array(labels.astype(np.uint16), modality="OT"),
            names,
            image,
            path,
            expert=result.expert,
            expert_version=str(version) if version else None,
        )
        seg = pydicom.dcmread(path)
    sources = read_series_headers(image)
    sr = build_measurement_report(
        rows,
        seg,
        sources,
        expert=result.expert,
        expert_version=str(version) if version else None,
        vlm=vlm,
        question=question,
        answer=answer,
    )
    for ds in (seg, sr):
        if str(ds.StudyInstanceUID) != origin["study_uid"]:
            raise InputError(
                "a result object does not belong to the source study", origin["reference"]
            )
    return seg, sr


def store_objects(root: str, study_uid: str, objects: Mapping[str, Any]) -> list[StoredObject]:
    """STOW-RS ``objects`` (kind -> dataset) to ``study_uid`` in one request, all or nothing.

    Args:
        root: The server's DICOMweb root.
        study_uid: The study the objects belong to.
        objects: ``{"seg": ds, "sr": ds}``.

    Returns:
        What was stored.

    Raises:
        InputError: The request failed or the server refused an instance; any
            instance of the request it had stored has been deleted again.
    """
    import requests

    client = connect(root)
    datasets = list(objects.values())
    uids = [str(ds.SOPInstanceUID) for ds in datasets]
    try:
        with server_call(root, f"storing {len(datasets)} result object(s) in study {study_uid}"):
            response = client.store_instances(datasets, study_instance_uid=study_uid)
    except InputError as exc:
        _rollback(client, root, study_uid, uids, exc.message)
        raise
    except requests.exceptions.RequestException as exc:
        _rollback(client, root, study_uid, uids, str(exc))
        raise InputError(f"storing the results failed: {exc}", root) from None
    failed = _failed(response)
    if not failed:  # some servers report filtered-out instances as stored: check
        present = set(_present(client, root, study_uid, uids))
        failed = [f"{u}: not found on the server after storing" for u in uids if u not in present]
    if failed:
        _rollback(client, root, study_uid, uids, "; ".join(failed))
        raise InputError(
            f"the server refused {len(failed)} of {len(uids)} result objects "
            f"({'; '.join(failed)}); nothing was left on the server",
            root,
        )
    return [
        StoredObject(
            kind=kind,
            sop_class_uid=str(ds.SOPClassUID),
            sop_instance_uid=str(ds.SOPInstanceUID),
            series_instance_uid=str(ds.SeriesInstanceUID),
        )
        for kind, ds in objects.items()
    ]


def _failed(response: Any) -> list[str]:
    out = []
    for item in (response.get("FailedSOPSequence") or []) if response is not None else []:
        reason = item.get("FailureReason")
        out.append(f"{item.get('ReferencedSOPInstanceUID', '?')}: failure reason {reason}")
    return out


def _present(client: Any, root: str, study_uid: str, uids: Sequence[str]) -> list[str]:
    with server_call(root, "checking what was stored"):
        found = client.search_for_instances(study_instance_uid=study_uid, fields=["SOPInstanceUID"])
    on_server = {str(r.get("00080018", {}).get("Value", [""])[0]) for r in found or []}
    return [u for u in uids if u in on_server]


def _rollback(client: Any, root: str, study_uid: str, uids: Sequence[str], why: str) -> None:
    """Delete the instances of a failed request that the server did store."""
    try:
        stored = _present(client, root, study_uid, uids)
    except InputError:
        return  # the server is unreachable: the request cannot have stored anything we can see
    left = [u for u in stored if not _delete(client, root, u)]
    if left:
        raise InputError(
            f"storing failed ({why}) and the server kept {len(left)} instance(s) that could not "
            f"be deleted: {', '.join(left)}; remove them by hand",
            root,
        )


def _delete(client: Any, root: str, sop_uid: str) -> bool:
    """Delete one instance: DICOMweb DELETE, else Orthanc's REST API."""
    session = client._session  # the authenticated requests session
    try:
        found = client.search_for_instances(search_filters={"SOPInstanceUID": sop_uid})
        if found:
            study = found[0]["0020000D"]["Value"][0]
            series = found[0]["0020000E"]["Value"][0]
            client.delete_instance(study, series, sop_uid)
            return True
    except Exception:  # DELETE is optional in DICOMweb; fall back below
        pass
    base = root.rstrip("/")
    orthanc = base.rsplit("/", 1)[0] if "/" in base.split("://", 1)[1] else base
    try:
        r = session.post(f"{orthanc}/tools/lookup", data=sop_uid)
        r.raise_for_status()
        for hit in r.json():
            if hit.get("Type") == "Instance":
                session.delete(f"{orthanc}{hit['Path']}").raise_for_status()
                return True
    except Exception:
        return False
    return False


def store_result(
    result: ExpertResult,
    image: MedicalImage,
    *,
    mask: MedicalImage | None = None,
    vlm: str | None = None,
    question: str | None = None,
    answer: str | None = None,
) -> list[StoredObject]:
    """Build the SEG and SR of ``result`` and store them in the image's study (all or nothing).

    Args:
        result: The expert result.
        image: The image it ran on (read from DICOMweb).
        mask: The measured mask (measure expert without a label map of its own).
        vlm: Name of the VLM that answered, if any.
        question: The question, if any.
        answer: The answer, if any.

    Returns:
        The stored objects (SEG first, then SR).
    """
    origin = dicomweb_source(image)
    seg, sr = build_result_objects(
        result, image, mask=mask, vlm=vlm, question=question, answer=answer
    )
    return store_objects(origin["root"], origin["study_uid"], {"seg": seg, "sr": sr})
