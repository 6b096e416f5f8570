"""PHI scrubbing of outgoing text: DICOM names, IDs, dates and UIDs in their common spellings.

Used by backends that send text off the machine (the ``openai`` backend) with
the values of :func:`medm3.imaging.deid.phi_values`. See
:class:`SensitiveValueScrubber` for the matching rules.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Iterable
from datetime import date

__all__ = ["REDACTION", "SensitiveValueScrubber"]

REDACTION = "[***]"
"""Replacement of a sensitive value. It has no letter or digit, so it can never
contain (or, with its neighbours, rebuild) a value the scrubber looks for."""

_MIN_VALUE_LENGTH = 2


def _has_alnum(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def _name_variants(value: str) -> set[str]:
    """Spellings of a DICOM person name ``Family^Given^Middle^Prefix^Suffix`` (``=`` groups)."""
    out: set[str] = set()
    for group in value.split("="):
        comps = [c.strip() for c in group.split("^")]
        family, given, middle, prefix, suffix = (comps + [""] * 5)[:5]
        if not any(comps):
            continue
        first = " ".join(c for c in (given, middle) if c)
        out.update(
            {
                "^".join(comps).strip("^"),
                "^".join(c for c in (family, given) if c),
                "^".join(c for c in (family, given, middle) if c),
                " ".join(c for c in (given, family) if c),
                " ".join(c for c in (first, family) if c),
                " ".join(c for c in (prefix, first, family, suffix) if c),
                " ".join(c for c in (family, given) if c),
                " ".join(c for c in (family, first) if c),
                ", ".join(c for c in (family, given) if c),
                ", ".join(c for c in (family, first) if c),
            }
        )
        out.update(c for c in comps if c)
    return out


def _date_variants(value: str) -> set[str]:
    """Common spellings of a DICOM date ``YYYYMMDD`` (also the date part of a DT value)."""
    match = re.fullmatch(r"(\d{4})(\d{2})(\d{2})(\d{2,6}(\.\d{1,6})?)?([+-]\d{4})?", value)
    if not match:
        return set()
    y, m, d = match.group(1), match.group(2), match.group(3)
    try:
        date(int(y), int(m), int(d))
    except ValueError:
        return set()
    return {
        f"{y}{m}{d}",
        f"{y}-{m}-{d}",
        f"{y}/{m}/{d}",
        f"{y}.{m}.{d}",
        f"{d}/{m}/{y}",
        f"{m}/{d}/{y}",
        f"{d}.{m}.{y}",
        f"{d}-{m}-{y}",
    }


class SensitiveValueScrubber:
    """Replaces sensitive values in text, case-insensitively, in their common spellings.

    Matching rules:

    * Text and values are compared after Unicode NFC normalisation, ignoring
      case (upper/lower/casefolded spellings are matched too, so ``ß``/``SS``
      differences do not let a value through).
    * Whitespace inside a value matches any run of whitespace.
    * A value with ``^`` (DICOM person name) also matches ``Given Family``,
      ``Given Middle Family``, ``Family Given``, ``Family, Given`` and each
      name component alone.
    * A DICOM date ``YYYYMMDD`` (or a DT value starting with one) also matches
      ``YYYY-MM-DD``, ``YYYY/MM/DD``, ``DD/MM/YYYY``, ``MM/DD/YYYY``,
      ``DD.MM.YYYY`` ...
    * Matching is by substring, not by word: ``Doe`` is redacted inside
      ``Doering`` too (over-redaction is the safe side).
    * Values shorter than 2 characters or without any letter or digit are ignored.

    Replacement repeats until no value is left, so overlapping values cannot
    leave a fragment that spells another one.

    Args:
        values: Initial sensitive values.
    """

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._variants: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()
        self.add(values)

    def __len__(self) -> int:
        return len(self._variants)

    def add(self, values: Iterable[str]) -> None:
        """Add sensitive values (strings; ``None`` and non-strings are converted or skipped).

        Args:
            values: The values.
        """
        if isinstance(values, str):
            values = [values]
        new: set[str] = set()
        for raw in values:
            if raw is None:
                continue
            value = unicodedata.normalize("NFC", str(raw)).strip()
            if len(value) < _MIN_VALUE_LENGTH or not _has_alnum(value):
                continue
            spellings = {value}
            if "^" in value or "=" in value:
                spellings |= _name_variants(value)
            spellings |= _date_variants(value)
            for s in spellings:
                s = " ".join(s.split())
                if len(s) < _MIN_VALUE_LENGTH or not _has_alnum(s):
                    continue
                for v in (s, s.upper(), s.lower(), s.casefold()):
                    new.add(unicodedata.normalize("NFC", v))
        if not new:
            return
        with self._lock:
            self._variants |= new
            alternatives = sorted(self._variants, key=lambda v: (-len(v), v))
            self._pattern = re.compile(
                "|".join(r"\s+".join(re.escape(w) for w in v.split(" ")) for v in alternatives),
                re.IGNORECASE,
            )

    def scrub(self, text: str) -> tuple[str, int]:
        """Replace every sensitive value in ``text`` by :data:`REDACTION`.

        Args:
            text: Any text.

        Returns:
            The scrubbed text and the number of replacements.
        """
        pattern = self._pattern
        if pattern is None or not text:
            return text, 0
        text = unicodedata.normalize("NFC", text)
        total = 0
        while True:  # ends: each pass removes at least one letter/digit
            text, n = pattern.subn(REDACTION, text)
            total += n
            if n == 0:
                return text, total
