"""Where expert-vista3d's label maps come from: source names -> VISTA3D ids, and the results.

A CT volume's structures come either from a reference label map (an MSD /
nnU-Net ``labelsTr/`` file whose values are named by ``dataset.json`` or a
``--label-map`` JSON and mapped to VISTA3D ids here) or from the VISTA3D
expert itself. :class:`VolumeResults` holds the resulting VISTA3D label map
of one volume and answers each VISTA3D argument from it, as the expert's
own cache derives sub-results from an "everything" run.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from medm3.data.base import BadRow
from medm3.errors import InputError

#: Volume file suffixes.
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
#: Tumour / lesion id -> the VISTA3D argument group that asks for it.
TUMOR_GROUPS: dict[int, str] = {
    26: "hepatic tumor",
    24: "pancreatic tumor",
    23: "lung tumor",
    128: "bone lesion",
}
#: Tumour ids asked about in vista3d mode, by the organ ids that must be present.
TUMOR_ORGANS: dict[int, tuple[int, ...]] = {
    26: (1,),
    24: (4,),
    23: (20, 28, 29, 30, 31, 32),
}
#: Words of a dataset's name/description -> the tumour id its "cancer" label means.
TUMOR_CONTEXT: tuple[tuple[str, int], ...] = (
    ("hepatic", 26),
    ("liver", 26),
    ("pancrea", 24),
    ("lung", 23),
    ("colon", 27),
    ("bone", 128),
)
_TUMOR_WORDS = {"cancer", "tumor", "tumour", "tumors", "tumours", "lesion", "lesions", "mass"}
_ALIASES = {
    "vessel": "hepatic vessel",
    "vessels": "hepatic vessel",
    "urinary bladder": "bladder",
    "gall bladder": "gallbladder",
    "ivc": "inferior vena cava",
}


def volume_stem(path: Path) -> str:
    """A volume's file name without its suffix (``liver_0.nii.gz`` -> ``liver_0``)."""
    name = path.name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def case_name(path: Path) -> str:
    """A CT volume's case name: its stem without the nnU-Net channel tag ``_0000``."""
    return re.sub(r"_0000$", "", volume_stem(path))


def list_volumes(folder: Path) -> list[Path]:
    """The volume files of a folder (sorted; hidden files left out); none when it is missing."""
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.name.lower().endswith(VOLUME_SUFFIXES)
    )


def vista3d_id(name: str, tumor_id: int | None = None) -> int | None:
    """The VISTA3D id of a source label name, or None when it cannot be mapped.

    Handles VISTA3D names (any case, ``_``), TotalSegmentator-style side
    suffixes (``kidney_left`` -> ``left kidney``, ``rib_left_1`` -> ``left rib 1``),
    a few aliases, ``background`` (0) and generic tumour names (``cancer``,
    ``tumour`` -> ``tumor_id``, the dataset's tumour).

    Args:
        name: Label name from dataset.json or --label-map.
        tumor_id: What a generic tumour name stands for in this dataset.
    """
    from medm3.experts import vista3d_labels as labels

    key = labels.normalize_name(name)
    if key in ("background", "bg", "0"):
        return 0
    if key in _TUMOR_WORDS:
        return tumor_id
    key = _ALIASES.get(key, key)
    found = labels.structure_id(key)
    if found is not None:
        return found
    words = key.split()
    for side in ("left", "right"):
        if side in words and words[0] != side:
            moved = " ".join([side, *[w for w in words if w != side]])
            found = labels.structure_id(_ALIASES.get(moved, moved))
            if found is not None:
                return found
    return None


def read_label_names(
    source: Path, label_map: Path | None
) -> tuple[dict[int, str | None], int | None]:
    """Source label value -> name (None: dropped), and the dataset's tumour id.

    ``label_map`` (``--label-map`` JSON) wins; else ``dataset.json``'s
    ``labels``, whose name and description say what its "cancer" means.

    Raises:
        InputError: Unreadable files or keys that are not label values.
    """
    from medm3.utils.jsonio import read_json

    names: dict[int, str | None] = {}
    tumor = None
    if label_map is not None:
        raw = read_json(label_map)
        if not isinstance(raw, dict):
            raise InputError("--label-map must be a JSON object", label_map)
        for key, value in raw.items():
            if not str(key).strip().isdigit():
                raise InputError(f"--label-map key {key!r} is not a label value")
            names[int(key)] = None if value is None else str(value)
    elif (source / "dataset.json").is_file():
        from medm3.imaging.labels import parse_label_map

        meta = read_json(source / "dataset.json")
        if isinstance(meta, dict) and meta.get("labels"):
            try:
                names = dict(parse_label_map(meta["labels"]))
            except InputError as exc:
                raise InputError(exc.message, source / "dataset.json") from None
            context = f"{meta.get('name', '')} {meta.get('description', '')}".lower()
            tumor = next((tid for word, tid in TUMOR_CONTEXT if word in context), None)
    return names, tumor


def map_label_names(names: dict[int, str | None], tumor: int | None) -> dict[int, int]:
    """Source label value -> VISTA3D id (0: dropped).

    Raises:
        InputError: Names that cannot be mapped (the message says how to map them).
    """
    mapping: dict[int, int] = {}
    unmapped: list[str] = []
    for value, name in sorted(names.items()):
        if name is None:
            mapping[value] = 0
            continue
        found = vista3d_id(name, tumor)
        if found is None:
            unmapped.append(f"{value}={name}")
        else:
            mapping[value] = found
    if unmapped:
        raise InputError(
            f"cannot map label(s) {', '.join(unmapped[:6])} to VISTA3D structures; "
            'give --label-map JSON, e.g. {"2": "hepatic tumor", "3": null}'
        )
    return mapping


class VolumeResults:
    """VISTA3D results of one volume, derived from its label map and memoised per argument.

    Args:
        image: The CT volume.
        label_map: Its VISTA3D label map (numpy array).
        annotated: Tumour ids the label map annotates (asked about with is-there).
        memo: Results already known by argument (the expert's own runs).
    """

    def __init__(
        self,
        image: Any,
        label_map: Any,
        annotated: set[int],
        memo: dict[str, Any] | None = None,
    ) -> None:
        self.image = image
        self.label_map = label_map
        self.annotated = set(annotated)
        self.memo: dict[str, Any] = dict(memo or {})

    @classmethod
    def from_reference(
        cls, image: Any, labels_file: Path, mapping: dict[int, int], annotated: set[int]
    ) -> VolumeResults:
        """From a reference label map (values mapped with ``mapping``; empty: VISTA3D ids).

        Raises:
            BadRow: An unreadable or mismatched label map, or unnamed values.
        """
        import numpy as np

        from medm3.experts.vista3d_labels import VISTA3D_LABELS
        from medm3.imaging.io import load_image
        from medm3.imaging.overlay import check_mask

        try:
            labels = check_mask(image, load_image(labels_file))
        except InputError as exc:
            raise BadRow(f"bad label map ({exc.message})") from None
        values = [int(v) for v in np.unique(labels) if v > 0]
        if mapping:
            unknown = [v for v in values if v not in mapping]
            if unknown:
                raise BadRow(f"label value(s) {unknown[:5]} not named in the label mapping")
            table = np.zeros(max(values, default=0) + 1, dtype=np.uint8)
            for value in values:
                table[value] = mapping[value]
            return cls(image, table[labels], annotated)
        unknown = [v for v in values if v not in VISTA3D_LABELS]
        if unknown:
            raise BadRow(f"label value(s) {unknown[:5]} are not VISTA3D ids")
        return cls(image, labels.astype(np.uint8), annotated)

    @classmethod
    def from_vista3d(
        cls, image: Any, *, device: str | None, weights: Any, tumours: bool
    ) -> VolumeResults:
        """From VISTA3D: "everything", plus (``tumours``) the tumour groups of present organs."""
        import numpy as np

        from medm3.experts.registry import get_expert

        expert = get_expert("vista3d", device=device, weights=weights)
        everything = expert.run(image, "everything", use_cache=False)
        memo = {"everything": everything}
        annotated: set[int] = set()
        label_map = np.asarray(everything.label_map.array).astype(np.uint8)
        if tumours:
            present = {int(i) for i in np.unique(label_map) if i > 0}
            for tumor, organs in TUMOR_ORGANS.items():
                if present & set(organs):
                    group = TUMOR_GROUPS[tumor]
                    result = expert.run(image, group, use_cache=False)
                    memo[group] = result
                    annotated.add(tumor)
                    label_map[np.asarray(result.label_map.array) == tumor] = tumor
        return cls(image, label_map, annotated, memo)

    def present(self) -> list[int]:
        """VISTA3D ids present in the volume's label map."""
        import numpy as np

        return [int(i) for i in np.unique(self.label_map) if i > 0]

    def args_for(self, target: int, group: bool = False) -> str:
        """The VISTA3D argument asking for a structure: its tumour group, else its name.

        With ``group`` (protocol released, whose cards list only groups) a
        structure is asked for by the first card group that holds it.
        """
        from medm3.experts.vista3d import Vista3DExpert
        from medm3.experts.vista3d_labels import LABEL_GROUPS, VISTA3D_LABELS

        if target in TUMOR_GROUPS:
            return TUMOR_GROUPS[target]
        if group:
            groups = [a for a in Vista3DExpert.valid_args[1:] if a not in TUMOR_GROUPS.values()]
            for arg in groups:
                if target in LABEL_GROUPS.get(arg, ()):
                    return arg
            return "everything"
        return VISTA3D_LABELS[target]

    def result(self, args: str) -> Any:
        """The VISTA3D result for an argument (reference labels, or derived from VISTA3D)."""
        if args not in self.memo:
            from medm3.data.reference_experts import ReferenceVista3D

            self.memo[args] = ReferenceVista3D(self.label_map).run(
                self.image, args, use_cache=False
            )
        return self.memo[args]

    def candidates(self) -> dict[str, list[int | None]]:
        """Question kind -> the VISTA3D ids it may ask about."""
        from medm3.experts.vista3d_labels import EVERYTHING, TUMOR_IDS

        present = self.present()
        organs = [i for i in present if i not in TUMOR_IDS]
        tumours = [i for i in present if i in TUMOR_GROUPS]
        return {
            "what": [None] if len([i for i in present if i in EVERYTHING]) >= 2 else [],
            "segment": list(organs),
            "is-there": sorted(self.annotated & set(TUMOR_GROUPS)),
            "how-many": list(tumours),
            "how-large": [*organs, *tumours],
        }
