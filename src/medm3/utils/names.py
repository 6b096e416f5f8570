"""The one normaliser of names people and models type: expert arguments, structure and label names.

``"'Hepatic_Tumor'"``, ``"hepatic-tumor"`` and ``" hepatic  tumor "`` all
become ``"hepatic tumor"`` (:func:`normalize_name`); :func:`name_key` also
ignores word order (``"right kidney"`` = ``"kidney_right"``). Used by the
experts' argument parsers (default, VISTA3D, measure), the VISTA3D label
tables, the trigger parser and the CXR label text.
"""

from __future__ import annotations

import re

_SPACE = re.compile(r"\s+")


def strip_arg(text: str | None) -> str:
    """An argument without surrounding white space and quotes (``None`` -> ``""``).

    Args:
        text: The raw argument, e.g. ``" 'liver' "``.

    Returns:
        ``"liver"``; case and inner spacing are kept.
    """
    return (text or "").strip().strip("'\"").strip()


def normalize_name(text: str | None) -> str:
    """The matching form of a name: lower case, ``_``/``-`` as spaces, quotes and extra spaces gone.

    Args:
        text: A group, structure or label name as written by a user or a VLM.

    Returns:
        E.g. ``"hepatic tumor"`` for ``"'Hepatic_Tumor'"``.
    """
    text = strip_arg(text).lower().replace("_", " ").replace("-", " ")
    return _SPACE.sub(" ", text).strip()


def name_key(text: str | None) -> str:
    """Order-free matching key: ``"right kidney"``, ``"Kidney_Right"`` and ``"kidney right"`` agree.

    Args:
        text: A name.

    Returns:
        The words of :func:`normalize_name`, sorted and joined by spaces.
    """
    return " ".join(sorted(normalize_name(text).split()))
