"""Expert-augmented CT conversations with VISTA3D (and MEASURE) calls.

Layout (Medical Segmentation Decathlon / nnU-Net): ``dataset.json``,
``imagesTr/*.nii.gz``, optional ``labelsTr/*.nii.gz``; see
:class:`ExpertVista3DBuilder` and ``m3 data build expert-vista3d --help``.
Question kinds: what / segment / is-there / how-many / how-large.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from medm3 import prompts
from medm3.data import templates
from medm3.data.base import (
    BadRow,
    Builder,
    BuilderOption,
    Item,
    ItemContext,
    hash_split,
    listing,
)
from medm3.data.conversation import (
    PROTOCOL_OPTION,
    ExpertConversation,
    expert_model_cards,
    save_view,
    slug,
)
from medm3.errors import InputError

#: Question kinds, in the order they are offered.
KINDS: tuple[str, ...] = ("what", "segment", "is-there", "how-many", "how-large")
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


def _stem(path: Path) -> str:
    name = path.name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


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


class ExpertVista3DBuilder(Builder):
    """CT questions answered with VISTA3D (and MEASURE) calls, from CT volumes.

    Expected layout of --source (Medical Segmentation Decathlon / nnU-Net style;
    e.g. Task03_Liver, Task07_Pancreas, Task09_Spleen, TotalSegmentator
    converted to it)::

        SOURCE/
          dataset.json        # optional: "labels" names the label values (MSD or nnU-Net form)
          imagesTr/NAME.nii.gz          # CT volumes in HU (NAME_0000.nii.gz accepted)
          labelsTr/NAME.nii.gz          # optional reference label maps
          imagesTs/NAME.nii.gz          # optional, used with --labels vista3d only

    A plain folder of CT volumes also works (--labels vista3d). Label source
    (--labels): "reference" maps labelsTr values to VISTA3D structures by the
    dataset.json names ("cancer"/"tumour" become the dataset's tumour, e.g.
    hepatic tumor for a liver set) or by --label-map JSON {"1": "liver",
    "2": "hepatic tumor", "3": null}; without either, values must be VISTA3D
    ids. "vista3d" runs the VISTA3D expert (--weights, --device) for
    "everything" and for the tumour groups of the organs it finds; other
    arguments are derived from the "everything" result, as the expert's cache
    does. "auto" (default): reference when labelsTr/ exists.

    Each volume gives --questions-per-volume rows, kinds (--kinds) drawn with
    the seed: what (structures in the shown slice), segment (an organ ->
    "The liver is shown in red."), is-there (a tumour: yes/no), how-many
    (tumour count from MEASURE's connected components) and how-large (volume
    and diameter from MEASURE). Every result text and overlay comes from the
    experts' own code; the shown image is the slice of VISTA3D's overlay,
    rendered as the agent renders it. Overlays are fed back as images unless
    --no-overlay.

    Splits: train, or a hash split by volume name with --test-fraction.
    Output: train.json [, test.json]; images/NAME/*.png.
    """

    name = "expert-vista3d"
    summary = "VISTA3D expert conversations from CT volumes (MSD/nnU-Net layout, labels or VISTA3D)"
    shard_size = 4
    splits = ("train", "test")
    options = (
        BuilderOption(
            "labels",
            "choice",
            "auto",
            "Label source: auto, reference (labelsTr/) or vista3d (run the expert).",
            ("auto", "reference", "vista3d"),
        ),
        BuilderOption("label-map", "path", None, "JSON: source label value -> VISTA3D name."),
        BuilderOption("weights", "path", None, "VISTA3D bundle folder (else the cache)."),
        BuilderOption("device", "str", None, "Device for VISTA3D (cpu, cuda ...)."),
        BuilderOption("questions-per-volume", "int", 4, "Rows per volume."),
        BuilderOption("kinds", "str", ",".join(KINDS), "Question kinds to draw from."),
        BuilderOption("test-fraction", "float", 0.0, "Fraction of volumes in test.json."),
        BuilderOption("experts", "str", "", "Experts in the model cards (default: all)."),
        BuilderOption("no-overlay", "flag", False, "Do not feed overlay images back."),
        PROTOCOL_OPTION,
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._mapping: dict[int, int] | None = None
        self._annotated: set[int] = set()
        self._cards: str | None = None

    # ------------------------------------------------------------- layout
    def _images_dir(self) -> Path:
        return self.source / "imagesTr" if (self.source / "imagesTr").is_dir() else self.source

    def _labels_dir(self) -> Path:
        return self.source / "labelsTr"

    def mode(self) -> str:
        """``reference`` or ``vista3d``."""
        mode = self.opts["labels"]
        if mode == "auto":
            return "reference" if self._labels_dir().is_dir() else "vista3d"
        return mode

    def kinds(self) -> list[str]:
        """The question kinds requested (MEASURE kinds need MEASURE in the cards)."""
        kinds = [k.strip() for k in self.opts["kinds"].split(",") if k.strip()]
        unknown = [k for k in kinds if k not in KINDS]
        if unknown or not kinds:
            raise InputError(
                f"unknown question kind(s) {', '.join(unknown) or '(none)'}; "
                f"choose from {', '.join(KINDS)}"
            )
        experts = [e.strip().lower() for e in self.opts["experts"].split(",") if e.strip()]
        released = self.opts.get("protocol", "released") == "released"
        if released or (experts and "measure" not in experts):  # MEASURE is a medm3 card
            kinds = [k for k in kinds if k not in ("how-many", "how-large")]
        return kinds

    def _volumes(self, folder: Path) -> list[Path]:
        if not folder.is_dir():
            return []
        return sorted(
            p
            for p in folder.iterdir()
            if p.is_file()
            and not p.name.startswith(".")
            and p.name.lower().endswith(VOLUME_SUFFIXES)
        )

    def check_source(self) -> None:
        """Check the folders, the label mapping and the options."""
        if not self.source.is_dir():
            raise InputError("expert-vista3d --source must be a folder", self.source)
        if not self._volumes(self._images_dir()):
            raise InputError(
                f"no CT volumes found (expected imagesTr/*.nii.gz; {listing(self.source)})",
                self.source,
            )
        self.kinds()
        if self.opts["questions_per_volume"] < 1:
            raise InputError("--questions-per-volume must be at least 1")
        if not 0.0 <= self.opts["test_fraction"] < 1.0:
            raise InputError("--test-fraction must be in [0, 1)")
        if self.mode() == "reference":
            if not self._labels_dir().is_dir():
                raise InputError(
                    "--labels reference needs a labelsTr/ folder (or use --labels vista3d)",
                    self.source,
                )
            self.label_mapping()
        elif self.opts["label_map"]:
            raise InputError("--label-map applies to reference labels only")

    def annotation_files(self) -> list[Path]:
        """dataset.json and the --label-map file, when present."""
        files = [self.source / "dataset.json"]
        if self.opts["label_map"]:
            files.append(Path(self.opts["label_map"]))
        return [f for f in files if f.is_file()]

    def label_mapping(self) -> dict[int, int]:
        """Source label value -> VISTA3D id (0: dropped); empty means "values are VISTA3D ids".

        Raises:
            InputError: Names that cannot be mapped (the message says how to map them).
        """
        if self._mapping is not None:
            return self._mapping
        names: dict[int, str | None] = {}
        tumor = None
        if self.opts["label_map"]:
            raw = _read_json(Path(self.opts["label_map"]))
            if not isinstance(raw, dict):
                raise InputError("--label-map must be a JSON object", self.opts["label_map"])
            for key, value in raw.items():
                if not str(key).strip().isdigit():
                    raise InputError(f"--label-map key {key!r} is not a label value")
                names[int(key)] = None if value is None else str(value)
        elif (self.source / "dataset.json").is_file():
            from medm3.imaging.labels import parse_label_map

            meta = _read_json(self.source / "dataset.json")
            if isinstance(meta, dict) and meta.get("labels"):
                try:
                    names = dict(parse_label_map(meta["labels"]))
                except InputError as exc:
                    raise InputError(exc.message, self.source / "dataset.json") from None
                context = f"{meta.get('name', '')} {meta.get('description', '')}".lower()
                tumor = next((tid for word, tid in TUMOR_CONTEXT if word in context), None)
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
        from medm3.experts.vista3d_labels import TUMOR_IDS

        self._annotated = {v for v in mapping.values() if v in TUMOR_IDS}
        self._mapping = mapping
        return mapping

    # -------------------------------------------------------------- items
    def items(self) -> Iterable[Item]:
        """One item per volume (imagesTr, plus imagesTs with --labels vista3d)."""
        volumes = self._volumes(self._images_dir())
        if self.mode() == "vista3d":
            volumes += self._volumes(self.source / "imagesTs")
        fraction = self.opts["test_fraction"]
        for path in volumes:
            stem = re.sub(r"_0000$", "", _stem(path))
            split = hash_split(stem, [("test", fraction), ("train", 1.0)]) if fraction else "train"
            yield Item(id=f"expert-vista3d/{stem}", split=split, data=str(path))

    # ------------------------------------------------------------ convert
    def convert(self, item: Item, ctx: ItemContext) -> list[dict[str, Any]]:
        """The rows of one volume."""
        from medm3.imaging.io import load_image

        path = Path(item.data)
        stem = item.id.split("/", 1)[1]
        try:
            image = load_image(path, modality="CT")
        except InputError as exc:
            raise BadRow(f"unreadable CT ({exc.message})") from None
        if not image.is_volume:
            raise BadRow("not a 3D volume")
        source = _Results(self, image, stem, path)
        if self._cards is None:
            self._cards = expert_model_cards(self.opts["experts"], self.opts["protocol"])
        plan = source.plan(self.kinds(), self.opts["questions_per_volume"], ctx)
        rows = []
        for k, (kind, target) in enumerate(plan):
            rows.append(self._row(f"{item.id}#q{k}", kind, target, source, stem, ctx))
        return rows

    def _row(
        self,
        row_id: str,
        kind: str,
        target: int | None,
        source: _Results,
        stem: str,
        ctx: ItemContext,
    ) -> dict[str, Any]:
        from medm3.agent.feedback import ShownSlice
        from medm3.agent.protocol import get_protocol
        from medm3.experts.vista3d_labels import VISTA3D_LABELS

        protocol = get_protocol(self.opts["protocol"])
        name = VISTA3D_LABELS[target] if target is not None else ""
        question = templates.pick(ctx.rng, templates.VISTA3D[kind], name)
        args = "everything" if kind == "what" else source.args_for(target, protocol.released)  # type: ignore[arg-type]
        result = source.result(args)
        shown = result.overlays[0].slice_index if result.overlays else None
        view = save_view(ctx, source.image, shown, f"images/{stem}/axial_{shown}.png")
        conv = ExpertConversation(
            protocol.first_turn(question, "CT", cards=self._cards or ""),
            [view],
            feed_overlay=not self.opts["no_overlay"],
            protocol=protocol,
        )
        meta: dict[str, Any] = {
            "dataset": self.name,
            "question_type": kind,
            "question": question,
            "volume": stem,
            "protocol": protocol.name,
            "slice": shown,
        }
        if target is not None:
            meta["structure"] = name
        if kind == "segment" and protocol.released:  # trained: the trigger reply is the answer
            trigger = prompts.format_trigger("VISTA3D", args)
            conv.segmentation_answer(result, f"I segmented the {name} using {trigger}.")
            return conv.row(row_id, meta)
        result = conv.call(
            result,
            question,
            ctx,
            f"images/{stem}/vista3d_{slug(args)}_axial_{shown}.png",
            shown=ShownSlice(source.image, "axial", shown, "auto"),
        )
        colours = result.info.get("colors", {})
        ids = [int(i) for i in colours]
        if kind == "what" and protocol.released:
            described = ", ".join(f"{colours[str(i)]}: {result.label_names[i]}" for i in ids)
            conv.answer(
                "This a CT image. It contains several anatomical structures such as "
                f"identified by VISTA3D: {described}."
            )
        elif kind == "what":
            parts = [f"{VISTA3D_LABELS.get(i, f'label {i}')} ({colours[str(i)]})" for i in ids]
            conv.answer(f"This CT image shows {templates.join_names(parts)}.")
        elif kind == "segment":
            conv.answer(f"The {name} is shown in {colours.get(str(target), 'color')}.")
        elif kind == "is-there":
            present = target in result.label_names
            conv.answer("yes" if present else "no")
            meta["answer_type"] = "CLOSED"
        else:
            measured = source.measure(result, name)
            mrow = next(r for r in measured.measurements if r["label"] == target)
            slice_no = measured.overlays[0].slice_index if measured.overlays else "none"
            conv.call(measured, question, ctx, f"images/{stem}/measure_{slug(name)}_{slice_no}.png")
            conv.answer(_measure_answer(kind, name, mrow))
        return conv.row(row_id, meta)


class _Results:
    """Expert results of one volume (reference labels or VISTA3D), memoised per argument."""

    def __init__(self, builder: ExpertVista3DBuilder, image: Any, stem: str, path: Path) -> None:
        self.builder = builder
        self.image = image
        self.stem = stem
        self.memo: dict[str, Any] = {}
        self.annotated: set[int] = set()
        if builder.mode() == "reference":
            self.label_map = self._reference(path)
            self.annotated = set(builder._annotated)
        else:
            self.label_map = self._vista3d()

    def _reference(self, path: Path) -> Any:
        import numpy as np

        from medm3.experts.vista3d_labels import VISTA3D_LABELS
        from medm3.imaging.io import load_image
        from medm3.imaging.overlay import check_mask

        stem = re.sub(r"_0000$", "", _stem(path))
        candidates = [
            p for p in self.builder._volumes(self.builder._labels_dir()) if _stem(p) == stem
        ]
        if not candidates:
            raise BadRow("no reference label map in labelsTr/")
        try:
            labels = check_mask(self.image, load_image(candidates[0]))
        except InputError as exc:
            raise BadRow(f"bad label map ({exc.message})") from None
        mapping = self.builder.label_mapping()
        values = [int(v) for v in np.unique(labels) if v > 0]
        if mapping:
            unknown = [v for v in values if v not in mapping]
            if unknown:
                raise BadRow(f"label value(s) {unknown[:5]} not named in the label mapping")
            table = np.zeros(max(values, default=0) + 1, dtype=np.uint8)
            for value in values:
                table[value] = mapping[value]
            return table[labels]
        unknown = [v for v in values if v not in VISTA3D_LABELS]
        if unknown:
            raise BadRow(f"label value(s) {unknown[:5]} are not VISTA3D ids")
        return labels.astype(np.uint8)

    def _vista3d(self) -> Any:
        import numpy as np

        from medm3.experts.registry import get_expert

        opts = self.builder.opts
        expert = get_expert("vista3d", device=opts["device"], weights=opts["weights"])
        everything = expert.run(self.image, "everything", use_cache=False)
        self.memo["everything"] = everything
        label_map = np.asarray(everything.label_map.array).astype(np.uint8)
        kinds = set(self.builder.kinds())
        if kinds & {"is-there", "how-many", "how-large"}:
            present = {int(i) for i in np.unique(label_map) if i > 0}
            for tumor, organs in TUMOR_ORGANS.items():
                if present & set(organs):
                    group = TUMOR_GROUPS[tumor]
                    result = expert.run(self.image, group, use_cache=False)
                    self.memo[group] = result
                    self.annotated.add(tumor)
                    tumour_voxels = np.asarray(result.label_map.array) == tumor
                    label_map[tumour_voxels] = tumor
        return label_map

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

    def measure(self, previous: Any, name: str) -> Any:
        """The MEASURE result for a structure of a VISTA3D result (as the agent chains it)."""
        from medm3.experts.base import RunContext
        from medm3.experts.registry import get_expert

        return get_expert("measure").run(
            {"image": self.image}, name, context=RunContext(previous=[previous]), use_cache=False
        )

    def plan(self, kinds: list[str], count: int, ctx: ItemContext) -> list[tuple[str, int | None]]:
        """``(kind, target id)`` for each row, drawn with the item's RNG."""
        from medm3.experts.vista3d_labels import EVERYTHING, TUMOR_IDS

        present = self.present()
        organs = [i for i in present if i not in TUMOR_IDS]
        tumours = [i for i in present if i in TUMOR_GROUPS]
        candidates: dict[str, list[int | None]] = {
            "what": [None] if len([i for i in present if i in EVERYTHING]) >= 2 else [],
            "segment": list(organs),
            "is-there": sorted(self.annotated & set(TUMOR_GROUPS)),
            "how-many": list(tumours),
            "how-large": [*organs, *tumours],
        }
        available = [k for k in kinds if candidates[k]]
        if not available:
            from medm3.data.base import SkipRow

            raise SkipRow("no structure to ask about")
        plan: list[tuple[str, int | None]] = []
        pool: list[str] = []
        for _ in range(count):
            if not pool:
                pool = list(available)
            kind = pool.pop(ctx.rng.randrange(len(pool)))
            options = candidates[kind]
            plan.append((kind, options[ctx.rng.randrange(len(options))]))
        return plan


def _measure_answer(kind: str, name: str, row: Mapping[str, Any]) -> str:
    """The answer to a how-many / how-large question from one MEASURE row."""
    count = int(row.get("components") or 0)
    if kind == "how-many":
        if count == 1:
            return f"There is 1 {name}."
        return f"There are {count} {templates.plural(name)}."
    volume = templates.format_ml(row["volume_ml"])
    diameter = float(row["max_axial_diameter_mm"])
    text = (
        f"The {name} has a volume of {volume} mL and a maximum axial diameter of {diameter:.1f} mm."
    )
    if count > 1:
        text += f" It consists of {count} separate parts."
    return text


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"cannot read JSON: {exc}", path) from None
