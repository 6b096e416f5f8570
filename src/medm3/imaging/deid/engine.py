"""Apply the Basic Profile action table to a pydicom dataset, and list a dataset's PHI.

:func:`deidentify_dataset` edits a dataset in place; :func:`phi_values` lists the
identifying string values of a dataset so tests can check that none survives.

The pixel data is never modified: text burned into the pixels (common in ultrasound,
secondary captures and scanned documents) is NOT removed. :func:`deidentify_dataset`
reports a warning for images likely to hold such text.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

from medm3 import __version__
from medm3.imaging.deid.keys import ID_PREFIX, NAME_PREFIX, Remapper, resolve_key
from medm3.imaging.deid.profile import DICOM_UID_ROOT, Action, action_for_keyword

#: Text of Deidentification Method (0012,0063), first value; the second names medm3.
METHOD = "DICOM PS3.15 Basic Application Level Confidentiality Profile"

#: (Code Value, Coding Scheme Designator, Code Meaning) put in the method code sequence.
METHOD_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")

#: Dummy value written by action D, per VR (VRs not listed get a zero-length value).
DUMMY_VALUES: dict[str, Any] = {
    "AE": "ANONYMIZED",
    "AS": "000Y",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "DS": "0",
    "IS": "0",
    "LO": "ANONYMIZED",
    "LT": "ANONYMIZED",
    "PN": "ANONYMOUS",
    "SH": "ANONYMIZED",
    "ST": "ANONYMIZED",
    "UC": "ANONYMIZED",
    "UT": "ANONYMIZED",
    "FL": 0.0,
    "FD": 0.0,
    "SL": 0,
    "SS": 0,
    "SV": 0,
    "UL": 0,
    "US": 0,
    "UV": 0,
}

#: Modalities whose pixels often carry burned-in text (ultrasound, secondary capture,
#: other, external-camera photographs, scanned documents).
BURNED_IN_MODALITIES = frozenset({"US", "SC", "OT", "XC", "DOC"})

#: Text medm3 itself writes (besides dummies): a value found inside it proves nothing.
_OWN_TEXT = (ID_PREFIX, NAME_PREFIX, METHOD, *METHOD_CODE, f"medm3 {__version__}", "REMOVED")

_SECONDARY_CAPTURE_ROOT = "1.2.840.10008.5.1.4.1.1.7"
_TEXT_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
_STRING_VRS = _TEXT_VRS | {"DS", "IS"}
_FILE_META_PHI = (
    "MediaStorageSOPInstanceUID",
    "SourceApplicationEntityTitle",
    "SendingApplicationEntityTitle",
    "ReceivingApplicationEntityTitle",
    "SourcePresentationAddress",
    "SendingPresentationAddress",
    "ReceivingPresentationAddress",
)


@dataclass
class DeidReport:
    """What :func:`deidentify_dataset` did to one dataset.

    Attributes:
        removed: Public attributes removed (action X, curves, overlays, unreadable ones).
        private_removed: Private attributes removed (all of them, as the profile asks).
        emptied: Attributes given a zero-length value (action Z).
        replaced: Values replaced by dummies or keyed pseudonyms (actions D and P).
        uids_replaced: UID values replaced by keyed ``2.25.`` UIDs (action U).
        warnings: Problems a person should look at, e.g. possible burned-in text.
        burned_in_risk: True when the pixels may carry identifying text, which is
            NOT removed.
        random_key: True when the key was generated at random for this call, so the
            new UIDs and pseudonyms match no other run.
    """

    removed: int = 0
    private_removed: int = 0
    emptied: int = 0
    replaced: int = 0
    uids_replaced: int = 0
    warnings: list[str] = field(default_factory=list)
    burned_in_risk: bool = False
    random_key: bool = False

    def summary(self) -> str:
        """Return a one-line summary of the counts.

        Returns:
            Text such as ``"12 removed, 40 private removed, 3 emptied, ..."``.
        """
        return (
            f"{self.removed} removed, {self.private_removed} private removed, "
            f"{self.emptied} emptied, {self.replaced} replaced, "
            f"{self.uids_replaced} UIDs replaced"
        )


def _is_curve_or_overlay(tag: BaseTag) -> bool:
    return tag.group % 2 == 0 and (0x5000 <= tag.group <= 0x50FF or 0x6000 <= tag.group <= 0x60FF)


def _drop_without_lookup(tag: BaseTag) -> str | None:
    """Return why ``tag`` is removed whatever its value, or None when the table decides."""
    if tag.is_private:
        return "private"
    if tag.element == 0 or tag.group in (0x0000, 0x0002) or _is_curve_or_overlay(tag):
        return "structural"
    return None


def _action(elem: DataElement) -> Action:
    """Return the action for a public element: the table's, else the default rule."""
    action = action_for_keyword(elem.keyword) if elem.keyword else None
    if action is not None:
        return action
    if not elem.keyword:
        return Action.REMOVE  # public attribute unknown to the data dictionary
    if elem.VR == "UI":
        return Action.UID
    return Action.KEEP


def _values(elem: DataElement) -> list[Any]:
    if elem.VM == 0:
        return []
    if elem.VM > 1:
        return list(elem.value)
    return [elem.value]


def _set_values(elem: DataElement, values: list[Any]) -> None:
    elem.value = values if len(values) > 1 else values[0]


class _Cleaner:
    """One de-identification pass over a dataset and its nested sequences."""

    def __init__(self, remapper: Remapper, report: DeidReport) -> None:
        self.remapper = remapper
        self.report = report

    def uid(self, value: str) -> str:
        value = str(value).strip(" \x00")
        if not value or value.startswith(DICOM_UID_ROOT):
            return value
        self.report.uids_replaced += 1
        return self.remapper.uid(value)

    def clean(self, ds: Dataset) -> None:
        for tag in list(ds.keys()):
            tag = Tag(tag)
            reason = _drop_without_lookup(tag)
            if reason is not None:
                del ds[tag]
                if reason == "private":
                    self.report.private_removed += 1
                elif tag.element != 0 and tag.group != 0x0002:
                    self.report.removed += 1
                continue
            try:
                elem = ds[tag]
            except Exception as exc:  # a value pydicom cannot decode: drop it unseen
                del ds[tag]
                self.report.removed += 1
                # Name the error type only: its message may quote the (identifying) value.
                self.report.warnings.append(
                    f"removed unreadable attribute {tag} ({type(exc).__name__})"
                )
                continue
            self.apply(ds, elem, _action(elem))

    def apply(self, ds: Dataset, elem: DataElement, action: Action) -> None:
        if action is Action.REMOVE:
            del ds[elem.tag]
            self.report.removed += 1
        elif elem.VR == "SQ":
            self.apply_sequence(ds, elem, action)
        elif action is Action.EMPTY:
            elem.value = elem.empty_value
            self.report.emptied += 1
        elif action is Action.KEEP:
            return
        elif elem.VR == "UI":  # U, or D / P on a UID: a keyed UID is the right dummy
            if _values(elem):
                _set_values(elem, [self.uid(v) for v in _values(elem)])
        elif action is Action.PSEUDONYM and elem.VR in _TEXT_VRS:
            self.pseudonymise(elem)
        else:
            self.dummy(elem)

    def apply_sequence(self, ds: Dataset, elem: DataElement, action: Action) -> None:
        if action is Action.EMPTY:
            elem.value = Sequence()
            self.report.emptied += 1
            return
        for item in elem.value or []:
            self.clean(item)

    def pseudonymise(self, elem: DataElement) -> None:
        values = [str(v) for v in _values(elem) if str(v).strip(" \x00")]
        if not values:
            return
        if elem.VR == "PN":
            new = [NAME_PREFIX + self.remapper.pseudonym(v) for v in values]
        else:
            new = [ID_PREFIX + self.remapper.pseudonym(v) for v in values]
        _set_values(elem, new)
        self.report.replaced += 1

    def dummy(self, elem: DataElement) -> None:
        if not _values(elem):
            return  # nothing to hide; an empty value stays empty
        elem.value = DUMMY_VALUES.get(elem.VR, elem.empty_value)
        self.report.replaced += 1


def _burned_in_reasons(ds: Dataset) -> list[str]:
    reasons = []
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
        reasons.append("Burned In Annotation is YES")
    if str(ds.get("RecognizableVisualFeatures", "")).upper() == "YES":
        reasons.append("Recognizable Visual Features is YES")
    modality = str(ds.get("Modality", "")).upper()
    if modality in BURNED_IN_MODALITIES:
        reasons.append(f"modality {modality} often has burned-in text")
    if str(ds.get("SOPClassUID", "")).startswith(_SECONDARY_CAPTURE_ROOT):
        reasons.append("secondary capture images often have burned-in text")
    return reasons


def _mark_deidentified(ds: Dataset) -> None:
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = [METHOD, f"medm3 {__version__}"]
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = METHOD_CODE
    ds.DeidentificationMethodCodeSequence = Sequence([code])
    ds.LongitudinalTemporalInformationModified = "REMOVED"


def _rebuild_file_meta(ds: Dataset, cleaner: _Cleaner) -> None:
    old = getattr(ds, "file_meta", None)
    if old is None:
        return
    meta = FileMetaDataset()
    sop_class = ds.get("SOPClassUID") or old.get("MediaStorageSOPClassUID")
    if sop_class:
        meta.MediaStorageSOPClassUID = sop_class
    sop_instance = ds.get("SOPInstanceUID")
    if not sop_instance and old.get("MediaStorageSOPInstanceUID"):
        sop_instance = cleaner.uid(old.MediaStorageSOPInstanceUID)
    if sop_instance:
        meta.MediaStorageSOPInstanceUID = sop_instance
    if "TransferSyntaxUID" in old:
        meta.TransferSyntaxUID = old.TransferSyntaxUID
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"MEDM3 {__version__}"[:16]
    ds.file_meta = meta


def deidentify_dataset(ds: Dataset, *, key: str | bytes | None = None) -> DeidReport:
    """De-identify ``ds`` in place with the PS3.15 Basic Application Confidentiality Profile.

    The dataset itself is modified (copy it first with ``copy.deepcopy`` to keep the
    original). Every attribute of the action table is removed, emptied, replaced by a
    dummy, pseudonymised or given a keyed UID, inside sequences too; private attributes,
    curves and overlays are removed; Patient Identity Removed, De-identification Method
    and its code sequence (113100, DCM) are added; the file meta information, when
    present, is rebuilt with the new SOP Instance UID and the preamble is zeroed.

    The pixel data is NOT modified: text burned into the image is not removed. The report
    warns when the image is likely to carry such text.

    Args:
        ds: The dataset to de-identify (a ``FileDataset`` or a plain ``Dataset``).
        key: Secret key of the keyed UIDs and pseudonyms; None reads
            ``$MEDM3_DEID_KEY``, else draws a random key for this call only (then no
            UID or pseudonym matches those of another call).

    Returns:
        The :class:`DeidReport` of what was done.
    """
    key_bytes, random_key = resolve_key(key)
    report = DeidReport(random_key=random_key)
    reasons = _burned_in_reasons(ds)
    if reasons:
        report.burned_in_risk = True
        report.warnings.append(
            "possible burned-in PHI in the pixel data (" + "; ".join(reasons) + "): "
            "the pixels were NOT scrubbed; review the image before sharing it"
        )
    cleaner = _Cleaner(Remapper(key_bytes), report)
    cleaner.clean(ds)
    _mark_deidentified(ds)
    _rebuild_file_meta(ds, cleaner)
    if getattr(ds, "preamble", None) is not None:
        ds.preamble = b"\x00" * 128
    return report


def _strings(elem: DataElement) -> Iterator[str]:
    """Yield the text of a string element's values (and of each person-name component)."""
    if elem.VR not in _STRING_VRS:
        return
    for value in _values(elem):
        text = str(value)
        yield text
        if elem.VR == "PN":
            for group in text.split("="):
                yield from group.split("^")


class _PhiCollector:
    """Walk a dataset without changing it and split its text into PHI and retained text."""

    def __init__(self) -> None:
        self.phi: set[str] = set()
        self.retained: list[str] = []

    def walk(self, ds: Dataset, *, removed: bool = False) -> None:
        for tag in list(ds.keys()):
            tag = Tag(tag)
            try:
                elem = ds[tag]
            except Exception:
                continue
            gone = removed or _drop_without_lookup(tag) is not None
            action = Action.REMOVE if gone else _action(elem)
            if elem.VR == "SQ":
                hides = gone or action in (Action.REMOVE, Action.EMPTY)
                for item in elem.value or []:
                    self.walk(item, removed=hides)
            elif action is Action.KEEP:
                self.retained.extend(_strings(elem))
            else:
                self.phi.update(
                    s
                    for s in _strings(elem)
                    if not (elem.VR == "UI" and s.strip(" \x00").startswith(DICOM_UID_ROOT))
                )


def phi_values(ds: Dataset, *, min_length: int = 3, exclude_retained: bool = True) -> set[str]:
    """Return the identifying string values present in ``ds`` (names, IDs, dates, UIDs, ...).

    These are the text values of every attribute the profile does not keep (including
    inside sequences, private attributes, and identifying file meta elements), plus each
    component of person names. Tests search the bytes of a de-identified file (or any
    payload sent elsewhere) for each of them.

    Values are stripped of padding; values shorter than ``min_length``, values with no
    letter or digit (``"----"``), and values found inside text medm3 writes itself (its
    dummies, ``ANONYMOUS^``, the method text) are left out, since finding them proves
    nothing. With ``exclude_retained``, values that also occur inside the
    text of an attribute the profile keeps are left out too (e.g. an institution named
    like the kept manufacturer), since those bytes legitimately remain.

    Args:
        ds: The original (not yet de-identified) dataset; it is not modified.
        min_length: Shortest value returned.
        exclude_retained: Leave out values found in the text of kept attributes.

    Returns:
        The set of identifying values.
    """
    collector = _PhiCollector()
    collector.walk(ds)
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        for keyword in _FILE_META_PHI:
            if keyword in meta:
                collector.phi.update(_strings(meta[keyword]))
    own_text = [*(str(v) for v in DUMMY_VALUES.values()), *_OWN_TEXT]
    result = set()
    for value in collector.phi:
        value = value.strip(" \x00")
        if len(value) < min_length or not any(c.isalnum() for c in value):
            continue
        if any(value in text for text in own_text):
            continue
        if exclude_retained and any(value in kept for kept in collector.retained):
            continue
        result.add(value)
    return result
