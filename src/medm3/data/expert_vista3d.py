"""Expert-augmented CT conversations with VISTA3D (and MEASURE) calls.

Layout (Medical Segmentation Decathlon / nnU-Net): ``dataset.json``,
``imagesTr/*.nii.gz``, optional ``labelsTr/*.nii.gz``; see
:class:`ExpertVista3DBuilder` and ``m3 data build expert-vista3d --help``.
Question kinds: what / segment / is-there / how-many / how-large. Label
names, VISTA3D ids and the per-volume results: :mod:`medm3.data.vista3d_sources`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from medm3 import prompts
from medm3.data import templates
from medm3.data.base import BadRow, BuilderOption, Item, ItemContext
from medm3.data.conversation import save_view, slug
from medm3.data.expert_builder import ExpertVolumeBuilder, run_measure, volume_options
from medm3.data.records import listing
from medm3.data.vista3d_sources import (
    VolumeResults,
    case_name,
    list_volumes,
    map_label_names,
    read_label_names,
    vista3d_id,
    volume_stem,
)
from medm3.errors import InputError

__all__ = ["KINDS", "ExpertVista3DBuilder", "vista3d_id"]

#: Question kinds, in the order they are offered.
KINDS: tuple[str, ...] = ("what", "segment", "is-there", "how-many", "how-large")


class ExpertVista3DBuilder(ExpertVolumeBuilder):
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
    KINDS = KINDS
    MEASURE_KINDS = ("how-many", "how-large")
    unit = "volume"
    options = volume_options(
        BuilderOption(
            "labels",
            "choice",
            "auto",
            "Label source: auto, reference (labelsTr/) or vista3d (run the expert).",
            ("auto", "reference", "vista3d"),
        ),
        BuilderOption("label-map", "path", None, "JSON: source label value -> VISTA3D name."),
        expert="VISTA3D",
        unit="volume",
        per_unit=4,
        kinds=KINDS,
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._mapping: dict[int, int] | None = None
        self._annotated: set[int] = set()

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

    def check_source(self) -> None:
        """Check the folders, the label mapping and the options."""
        if not self.source.is_dir():
            raise InputError("expert-vista3d --source must be a folder", self.source)
        if not list_volumes(self._images_dir()):
            raise InputError(
                f"no CT volumes found (expected imagesTr/*.nii.gz; {listing(self.source)})",
                self.source,
            )
        self.check_options()
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
        if self._mapping is None:
            from medm3.experts.vista3d_labels import TUMOR_IDS

            label_map = Path(self.opts["label_map"]) if self.opts["label_map"] else None
            mapping = map_label_names(*read_label_names(self.source, label_map))
            self._annotated = {v for v in mapping.values() if v in TUMOR_IDS}
            self._mapping = mapping
        return self._mapping

    # -------------------------------------------------------------- items
    def items(self) -> Iterable[Item]:
        """One item per volume (imagesTr, plus imagesTs with --labels vista3d)."""
        volumes = list_volumes(self._images_dir())
        if self.mode() == "vista3d":
            volumes += list_volumes(self.source / "imagesTs")
        for path in volumes:
            stem = case_name(path)
            yield Item(id=f"expert-vista3d/{stem}", split=self.split_of(stem), data=str(path))

    # ------------------------------------------------------------ convert
    def _results(self, image: Any, path: Path) -> VolumeResults:
        """The volume's VISTA3D results: reference labels or the expert's runs."""
        if self.mode() == "reference":
            stem = case_name(path)
            labels = [p for p in list_volumes(self._labels_dir()) if volume_stem(p) == stem]
            if not labels:
                raise BadRow("no reference label map in labelsTr/")
            mapping = self.label_mapping()
            return VolumeResults.from_reference(image, labels[0], mapping, self._annotated)
        tumours = bool(set(self.kinds()) & {"is-there", "how-many", "how-large"})
        return VolumeResults.from_vista3d(
            image, device=self.opts["device"], weights=self.opts["weights"], tumours=tumours
        )

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
        source = self._results(image, path)
        plan = self.draw_plan(source.candidates(), ctx, "no structure to ask about")
        return [
            self._row(f"{item.id}#q{k}", kind, target, source, stem, ctx)
            for k, (kind, target) in enumerate(plan)
        ]

    def _row(
        self,
        row_id: str,
        kind: str,
        target: int | None,
        source: VolumeResults,
        stem: str,
        ctx: ItemContext,
    ) -> dict[str, Any]:
        """One question about a volume: the VISTA3D call, maybe MEASURE, the answer."""
        from medm3.agent.feedback import ShownSlice
        from medm3.experts.vista3d_labels import VISTA3D_LABELS

        protocol = self.protocol()
        name = VISTA3D_LABELS[target] if target is not None else ""
        question = templates.pick(ctx.rng, templates.VISTA3D[kind], name)
        args = "everything" if kind == "what" else source.args_for(target, protocol.released)  # type: ignore[arg-type]
        result = source.result(args)
        shown = result.overlays[0].slice_index if result.overlays else None
        view = save_view(ctx, source.image, shown, f"images/{stem}/axial_{shown}.png")
        conv = self.conversation(protocol.first_turn(question, "CT", cards=self.cards()), [view])
        meta = self.row_meta(kind, question, ("volume", stem), shown)
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
        if kind in self.MEASURE_KINDS:
            measured = run_measure(source.image, result, name)
            mrow = next(r for r in measured.measurements if r["label"] == target)
            slice_no = measured.overlays[0].slice_index if measured.overlays else "none"
            conv.call(measured, question, ctx, f"images/{stem}/measure_{slug(name)}_{slice_no}.png")
            conv.answer(_measure_answer(kind, name, mrow))
        else:
            conv.answer(_segmentation_answer(kind, name, target, result, protocol.released))
            if kind == "is-there":
                meta["answer_type"] = "CLOSED"
        return conv.row(row_id, meta)


def _segmentation_answer(
    kind: str, name: str, target: int | None, result: Any, released: bool
) -> str:
    """The answer to a what / segment / is-there question from the result the model saw."""
    from medm3.experts.vista3d_labels import VISTA3D_LABELS

    colours = result.info.get("colors", {})
    ids = [int(i) for i in colours]
    if kind == "what" and released:
        described = ", ".join(f"{colours[str(i)]}: {result.label_names[i]}" for i in ids)
        return (
            "This a CT image. It contains several anatomical structures such as "
            f"identified by VISTA3D: {described}."
        )
    if kind == "what":
        parts = [f"{VISTA3D_LABELS.get(i, f'label {i}')} ({colours[str(i)]})" for i in ids]
        return f"This CT image shows {templates.join_names(parts)}."
    if kind == "segment":
        return f"The {name} is shown in {colours.get(str(target), 'color')}."
    return "yes" if target in result.label_names else "no"


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
