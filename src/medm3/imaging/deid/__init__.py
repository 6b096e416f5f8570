"""DICOM de-identification: PS3.15 Annex E Basic Application Level Confidentiality Profile.

Public API:

* :func:`deidentify_dataset` edits a pydicom dataset in place and returns a
  :class:`DeidReport`;
* :func:`deidentify_file` and :func:`deidentify_path` (file, folder or zip) write
  de-identified copies atomically;
* :func:`phi_values` lists the identifying values of a dataset, so tests can check that
  none of them survives in an output;
* :data:`BASIC_PROFILE` is the action table (keyword -> :class:`Action`).

UIDs become keyed ``2.25.`` UIDs and identifiers keyed pseudonyms (HMAC-SHA256): with
the same key (argument, else ``$MEDM3_DEID_KEY``) the same input always gives the same
output, so studies and series stay linked across files and runs. Without a key a random
one is drawn per run, and nothing links to other runs.

Pixel data is never modified: text burned into the image is NOT removed; a warning is
reported for images likely to carry it (Burned In Annotation YES, US, SC, OT, XC, DOC,
secondary captures). Embedded JPEG comment segments are not inspected either.
"""

from __future__ import annotations

from medm3.imaging.deid.engine import DeidReport, deidentify_dataset, phi_values
from medm3.imaging.deid.files import (
    DeidSummary,
    FileResult,
    deidentify_file,
    deidentify_path,
    is_dicom_file,
)
from medm3.imaging.deid.keys import KEY_ENV_VAR, resolve_key
from medm3.imaging.deid.profile import BASIC_PROFILE, PROFILE_CODE, Action

__all__ = [
    "BASIC_PROFILE",
    "KEY_ENV_VAR",
    "PROFILE_CODE",
    "Action",
    "DeidReport",
    "DeidSummary",
    "FileResult",
    "deidentify_dataset",
    "deidentify_file",
    "deidentify_path",
    "is_dicom_file",
    "phi_values",
    "resolve_key",
]
