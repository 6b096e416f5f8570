"""VISTA3D label tables: the 132 structure ids, the label groups and sub-class expansion.

These are medm3's own tables, written from the facts of the released VISTA3D
bundle (its ``label_dict``/``channel_def``, the ``subclass`` map and the
``everything_labels`` expression of ``configs/inference.json``) and the label
groups the VILA-M3 reference demo offers as VISTA3D arguments.

* :data:`VISTA3D_LABELS` -- id -> name for all 132 classes the class head knows.
* :data:`SUBCLASS` -- prompts the bundle expands before inference:
  ``kidney`` (2) -> left/right kidney, ``lung`` (20) -> the five lobes,
  ``bone`` (21) -> vertebrae, ribs and the other bones.
* :data:`EVERYTHING` -- the 117 ids of the "segment everything" prompt.
* :data:`LABEL_GROUPS` -- the VILA-M3 argument groups (``hepatic tumor``,
  ``organs`` ...) as unexpanded prompt ids.

Module import is light (no numpy, no torch).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from medm3.imaging.label_tables.expert_labels import VISTA3D_LABELS  # re-exported here
from medm3.utils.names import normalize_name

#: Highest class id the VISTA3D class head supports (larger ids are zero-shot).
LAST_SUPPORTED = 132

#: Prompt id -> the ids it is expanded to before inference (the bundle's ``subclass``).
SUBCLASS: dict[int, tuple[int, ...]] = {
    2: (14, 5),
    20: (28, 29, 30, 31, 32),
    21: (*range(33, 57), *range(63, 98), 114, 120, 122),
}

#: Ids left out of "everything": parents of sub-classes, tumours/lesions and rarely
#: reliable classes (the bundle's ``everything_labels``).
EVERYTHING_EXCLUDED: frozenset[int] = frozenset(
    {2, 16, 18, 20, 21, 23, 24, 25, 26, 27, 128, 129, 130, 131, 132}
)

#: The "segment everything" prompt: ids 1..132 minus :data:`EVERYTHING_EXCLUDED` (117 ids).
EVERYTHING: tuple[int, ...] = tuple(
    i for i in range(1, LAST_SUPPORTED + 1) if i not in EVERYTHING_EXCLUDED
)

#: Tumour / lesion ids (shown first when choosing the overlay slice).
TUMOR_IDS: frozenset[int] = frozenset({23, 24, 26, 27, 128, 129, 130})

#: VILA-M3 argument groups -> unexpanded prompt ids, in model-card order.
LABEL_GROUPS: dict[str, tuple[int, ...]] = {
    "everything": EVERYTHING,
    "hepatic tumor": (1, 26),
    "pancreatic tumor": (4, 24),
    "lung tumor": (20, 23, 28, 29, 30, 31, 32),
    "bone lesion": (128,),
    "organs": (*range(1, 6), 8, 9, 10, 14, 22, *range(23, 33), 57, 116, 117, 118, 121, 126, 132),
    "cardiovascular": (6, 7, 17, *range(58, 62), *range(108, 114), 115, 119, 123, 124, 125),
    "gastrointestinal": (11, 12, 13, 15, 19, 62),
    "skeleton": (21, *range(33, 57), 120, 122, 127, 128, *range(63, 98), 114),
    "muscles": tuple(range(98, 108)),
}

#: Other spellings accepted for a group (the reference demo also offered "hepatoma").
GROUP_ALIASES: dict[str, str] = {"hepatoma": "hepatic tumor"}

_NAME_TO_ID: dict[str, int] = {normalize_name(name): i for i, name in VISTA3D_LABELS.items()}


def group_name(text: str) -> str | None:
    """The canonical group name ``text`` refers to, or None.

    Args:
        text: Candidate group name (case-insensitive, aliases accepted).
    """
    key = normalize_name(text)
    key = GROUP_ALIASES.get(key, key)
    return key if key in LABEL_GROUPS else None


def structure_id(text: str) -> int | None:
    """The VISTA3D id of a structure name (case-insensitive) or id string, or None.

    Args:
        text: A structure name such as ``"Liver"``, or an id such as ``"3"``.
    """
    key = normalize_name(text)
    if key.isdigit():
        value = int(key)
        return value if value in VISTA3D_LABELS else None
    return _NAME_TO_ID.get(key)


def did_you_mean(text: str) -> str:
    """``"Did you mean 'liver'?"`` for the groups, aliases and structures close to ``text``.

    Args:
        text: The unknown name.

    Returns:
        The hint of :func:`medm3.utils.suggest.did_you_mean` (``""`` when nothing is close).
    """
    from medm3.utils.suggest import did_you_mean as hint

    return hint(normalize_name(text), [*LABEL_GROUPS, *GROUP_ALIASES, *VISTA3D_LABELS.values()])


def expand_prompt(ids: Iterable[int]) -> tuple[int, ...]:
    """Apply the sub-class expansion and drop repeated ids (first occurrence kept).

    Args:
        ids: Prompt ids, e.g. ``(20, 23)``.

    Returns:
        E.g. ``(28, 29, 30, 31, 32, 23)``.
    """
    out: list[int] = []
    for i in ids:
        for j in SUBCLASS.get(int(i), (int(i),)):
            if j not in out:
                out.append(j)
    return tuple(out)


def parse_structures(text: str) -> list[str]:
    """Split an argument string into canonical group/structure names.

    A string that is exactly a group name is that group. Otherwise it is a
    comma- (or semicolon-) separated list; each item is a structure name (or
    id), else a group name.

    Args:
        text: The raw argument.

    Returns:
        Canonical names; unknown items are returned as ``"?<item>"``.
    """
    group = group_name(text)
    if group is not None:
        return [group]
    names: list[str] = []
    for item in re.split(r"[,;]", text):
        if not normalize_name(item):
            continue
        sid = structure_id(item)
        name = VISTA3D_LABELS[sid] if sid is not None else group_name(item)
        name = name or f"?{item.strip()}"
        if name not in names:
            names.append(name)
    return names


def prompt_ids(args: str) -> tuple[int, ...]:
    """Unexpanded prompt ids of a normalised argument (a group or a name list).

    Args:
        args: Output of :meth:`medm3.experts.vista3d.Vista3DExpert.parse_args`.

    Returns:
        Ids in prompt order, without repeats.

    Raises:
        KeyError: If an item is not a known group or structure.
    """
    ids: list[int] = []
    for name in parse_structures(args):
        if name.startswith("?"):
            raise KeyError(name[1:])
        group = LABEL_GROUPS.get(name)
        for i in group if group is not None else (_NAME_TO_ID[normalize_name(name)],):
            if i not in ids:
                ids.append(i)
    return tuple(ids)
