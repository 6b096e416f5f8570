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

from medm3.utils.names import normalize_name

#: VISTA3D label id -> structure name (the bundle's 132 classes).
VISTA3D_LABELS: dict[int, str] = {
    1: "liver",
    2: "kidney",
    3: "spleen",
    4: "pancreas",
    5: "right kidney",
    6: "aorta",
    7: "inferior vena cava",
    8: "right adrenal gland",
    9: "left adrenal gland",
    10: "gallbladder",
    11: "esophagus",
    12: "stomach",
    13: "duodenum",
    14: "left kidney",
    15: "bladder",
    16: "prostate or uterus",
    17: "portal vein and splenic vein",
    18: "rectum",
    19: "small bowel",
    20: "lung",
    21: "bone",
    22: "brain",
    23: "lung tumor",
    24: "pancreatic tumor",
    25: "hepatic vessel",
    26: "hepatic tumor",
    27: "colon cancer primaries",
    28: "left lung upper lobe",
    29: "left lung lower lobe",
    30: "right lung upper lobe",
    31: "right lung middle lobe",
    32: "right lung lower lobe",
    33: "vertebrae L5",
    34: "vertebrae L4",
    35: "vertebrae L3",
    36: "vertebrae L2",
    37: "vertebrae L1",
    38: "vertebrae T12",
    39: "vertebrae T11",
    40: "vertebrae T10",
    41: "vertebrae T9",
    42: "vertebrae T8",
    43: "vertebrae T7",
    44: "vertebrae T6",
    45: "vertebrae T5",
    46: "vertebrae T4",
    47: "vertebrae T3",
    48: "vertebrae T2",
    49: "vertebrae T1",
    50: "vertebrae C7",
    51: "vertebrae C6",
    52: "vertebrae C5",
    53: "vertebrae C4",
    54: "vertebrae C3",
    55: "vertebrae C2",
    56: "vertebrae C1",
    57: "trachea",
    58: "left iliac artery",
    59: "right iliac artery",
    60: "left iliac vena",
    61: "right iliac vena",
    62: "colon",
    63: "left rib 1",
    64: "left rib 2",
    65: "left rib 3",
    66: "left rib 4",
    67: "left rib 5",
    68: "left rib 6",
    69: "left rib 7",
    70: "left rib 8",
    71: "left rib 9",
    72: "left rib 10",
    73: "left rib 11",
    74: "left rib 12",
    75: "right rib 1",
    76: "right rib 2",
    77: "right rib 3",
    78: "right rib 4",
    79: "right rib 5",
    80: "right rib 6",
    81: "right rib 7",
    82: "right rib 8",
    83: "right rib 9",
    84: "right rib 10",
    85: "right rib 11",
    86: "right rib 12",
    87: "left humerus",
    88: "right humerus",
    89: "left scapula",
    90: "right scapula",
    91: "left clavicula",
    92: "right clavicula",
    93: "left femur",
    94: "right femur",
    95: "left hip",
    96: "right hip",
    97: "sacrum",
    98: "left gluteus maximus",
    99: "right gluteus maximus",
    100: "left gluteus medius",
    101: "right gluteus medius",
    102: "left gluteus minimus",
    103: "right gluteus minimus",
    104: "left autochthon",
    105: "right autochthon",
    106: "left iliopsoas",
    107: "right iliopsoas",
    108: "left atrial appendage",
    109: "brachiocephalic trunk",
    110: "left brachiocephalic vein",
    111: "right brachiocephalic vein",
    112: "left common carotid artery",
    113: "right common carotid artery",
    114: "costal cartilages",
    115: "heart",
    116: "left kidney cyst",
    117: "right kidney cyst",
    118: "prostate",
    119: "pulmonary vein",
    120: "skull",
    121: "spinal cord",
    122: "sternum",
    123: "left subclavian artery",
    124: "right subclavian artery",
    125: "superior vena cava",
    126: "thyroid gland",
    127: "vertebrae S1",
    128: "bone lesion",
    129: "kidney mass",
    130: "liver tumor",
    131: "vertebrae L6",
    132: "airway",
}

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
