"""Action table of the DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile.

Each line of :data:`medm3.imaging.deid.ps315_table.TABLE` names one attribute by its
DICOM keyword, the action medm3 applies, and the action code that PS3.15 Table E.1-1
gives it (``-`` marks an attribute medm3 handles although the Basic Profile does not
list it). The table is data, in its own module with its provenance; this module parses
and checks it, and the engine in :mod:`medm3.imaging.deid.engine` applies it and holds
no per-attribute code.

Actions (:class:`Action`):

* ``K`` keep (sequences are still walked and cleaned item by item);
* ``X`` remove the attribute;
* ``Z`` keep it with a zero-length value (an empty sequence for SQ);
* ``D`` replace the value with a dummy of the same VR (see ``DUMMY_VALUES`` in the engine);
  for a sequence, keep it and clean its items (every identifying attribute an item may
  hold is itself in this table);
* ``U`` replace each UID with a keyed ``2.25.`` UID, the same for the same input UID and
  key; for a sequence, keep it and clean its items (UIDs inside are replaced);
* ``P`` replace each value with a keyed pseudonym (``ANON-<hash>``, or
  ``ANONYMOUS^<hash>`` for person names), the same for the same input value and key, so
  patients, studies and orders stay linkable across files. ``P`` is a consistent dummy,
  so it is allowed wherever the profile allows ``D`` or ``Z``.

Compound codes of the profile are resolved to one action per attribute with these rules:

* ``Z/D`` -> ``D`` (a dummy satisfies Type 1 and Type 2 attributes);
* ``X/Z`` -> ``Z`` (the attribute stays present, satisfying Type 2);
* ``X/D`` and ``X/Z/D`` -> ``X`` where the attribute is Type 3 in the common image
  IODs, ``D`` where some IOD makes it Type 1 (Device Serial Number, Acquisition DateTime,
  Observation DateTime, RT treatment dates);
* ``X/Z/U*`` -> ``U`` (reference sequences are kept; the instance UIDs inside are replaced).

Removal (``X``) is always at least as safe as the code asks for, so a ``D`` sequence whose
items may carry free text the table cannot reach (SR Content Sequence, graphic
annotations, person code sequences) is removed rather than kept.

Attributes not in the table are kept, except: private attributes, curve (50xx) and
overlay (60xx) groups, group lengths and command (0000) elements, and public attributes
unknown to the data dictionary, which are removed; and UIDs (VR UI) outside the DICOM
registry (``1.2.840.10008.*``), which are replaced as ``U``.
"""

from __future__ import annotations

from enum import Enum
from types import MappingProxyType

from medm3.imaging.deid.ps315_table import TABLE


class Action(str, Enum):
    """What the de-identification engine does with one attribute."""

    KEEP = "K"
    REMOVE = "X"
    EMPTY = "Z"
    DUMMY = "D"
    UID = "U"
    PSEUDONYM = "P"


#: Codes of PS3.15 Table E.1-1 that may appear in the third column (``-``: not listed).
PROFILE_CODES = frozenset({"X", "Z", "D", "U", "K", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*", "-"})


def _parse(text: str) -> tuple[dict[str, Action], dict[str, str]]:
    actions: dict[str, Action] = {}
    codes: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        keyword, action, code = line.split()
        if keyword in actions:
            raise ValueError(f"de-identification table line {number}: duplicate {keyword}")
        if code not in PROFILE_CODES:
            raise ValueError(f"de-identification table line {number}: bad code {code!r}")
        actions[keyword] = Action(action)
        codes[keyword] = code
    return actions, codes


_ACTIONS, _CODES = _parse(TABLE)

#: Attribute keyword -> the action medm3 applies (read-only).
BASIC_PROFILE: MappingProxyType[str, Action] = MappingProxyType(_ACTIONS)

#: Attribute keyword -> the action code of PS3.15 Table E.1-1 (``-``: not in the table).
PROFILE_CODE: MappingProxyType[str, str] = MappingProxyType(_CODES)

#: The DICOM registry root: UIDs under it name SOP classes, transfer syntaxes and the
#: like, never a patient or an instance, so they are kept.
DICOM_UID_ROOT = "1.2.840.10008."


def action_for_keyword(keyword: str) -> Action | None:
    """Return the table action of an attribute keyword, or None when it is not listed.

    Args:
        keyword: A DICOM attribute keyword such as ``"PatientName"``.

    Returns:
        The :class:`Action`, or None for an attribute the table does not list.
    """
    return _ACTIONS.get(keyword)
