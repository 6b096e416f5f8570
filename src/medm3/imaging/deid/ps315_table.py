"""The attribute table of medm3's DICOM de-identification profile (data only).

Provenance: each line names one attribute by its DICOM keyword (as in pydicom's
data dictionary), the action medm3 applies, and the action code that DICOM PS3.15
Annex E, Table E.1-1 "Application Level Confidentiality Profile Attributes" gives it
in the "Basic Prof." column (``-``: an attribute medm3 handles although the Basic
Profile does not list it). The codes were transcribed by hand from the published
standard (https://dicom.nema.org/medical/dicom/current/output/chtml/part15/chapter_E.html);
how compound codes (``X/Z``, ``X/D`` ...) were resolved to medm3's single action is
explained in :mod:`medm3.imaging.deid.profile`, which parses and checks this table
(unknown codes and duplicate keywords are refused at import).

The table itself is the package data file ``ps315_table.txt`` beside this module.

Columns: keyword, medm3 action (``K X Z D U P``), PS3.15 code. ``#`` starts a comment.
"""

from __future__ import annotations

from importlib.resources import files

#: The table's text, one attribute a line (comments start with ``#``).
TABLE: str = files(__package__).joinpath("ps315_table.txt").read_text(encoding="utf-8")
