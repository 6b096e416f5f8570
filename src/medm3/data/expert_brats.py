"""Expert-augmented brain-MRI conversations with BRATS (and MEASURE) calls.

Layout: BraTS training releases, ``[HGG|LGG/]CASE/CASE_{t1ce,t1,t2,flair[,seg]}.nii.gz``
(+ ``name_mapping.csv``); see :class:`ExpertBratsBuilder` and ``m3 data build
expert-brats --help``. Question kinds: segment / is-there / grade / how-large.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medm3 import prompts
from medm3.agent.feedback import ShownSlice
from medm3.data import templates
from medm3.data.base import BadRow, BuilderOption, Item, ItemContext, SkipRow
from medm3.data.conversation import save_view, slug
from medm3.data.expert_builder import ExpertVolumeBuilder, run_measure, volume_options
from medm3.data.records import listing
from medm3.errors import InputError

#: Question kinds, in the order they are offered.
KINDS: tuple[str, ...] = ("segment", "is-there", "grade", "how-large")
#: File-name tags of each input (BraTS 2018-2021 first, BraTS 2023 after).
SEQUENCE_TAGS: dict[str, tuple[str, ...]] = {
    "t1ce": ("t1ce", "t1c"),
    "t1": ("t1", "t1n"),
    "t2": ("t2", "t2w"),
    "flair": ("flair", "t2f"),
    "seg": ("seg",),
}
_FILE = re.compile(r"^(?P<case>.+?)[_-](?P<tag>t1ce|t1c|t1n|t1|t2w|t2f|t2|flair|seg)\.nii(\.gz)?$")
#: Names of the BraTS labels in questions and answers.
REGION_NAMES: dict[int, str] = {
    1: "necrotic tumor core",
    2: "peritumoral edema",
    4: "enhancing tumor",
}
WHOLE_TUMOR = "whole tumor"
#: Grade folder names -> answer.
GRADES: dict[str, str] = {
    "HGG": "This is a high-grade glioma (HGG).",
    "LGG": "This is a low-grade glioma (LGG).",
}


def find_cases(root: Path) -> list[tuple[str, dict[str, Path]]]:
    """BraTS case folders under ``root`` (any depth up to 3): ``(case, {tag: file})``.

    A folder is a case when it holds files ``{case}_{t1ce,t1,t2,flair}.nii[.gz]``
    (BraTS 2023: ``-t1c``, ``-t1n``, ``-t2w``, ``-t2f``); ``_seg`` is optional.
    """
    cases: list[tuple[str, dict[str, Path]]] = []
    folders = [root, *sorted(p for p in root.rglob("*") if p.is_dir() and _depth(p, root) <= 3)]
    for folder in folders:
        found: dict[str, Path] = {}
        name = None
        for path in sorted(folder.iterdir()):
            match = _FILE.match(path.name) if path.is_file() else None
            if not match:
                continue
            for key, tags in SEQUENCE_TAGS.items():
                if match.group("tag") in tags:
                    found.setdefault(key, path)
                    name = name or match.group("case")
        if name and all(k in found for k in ("t1ce", "t1", "t2", "flair")):
            cases.append((name, found))
    return cases


def _depth(path: Path, root: Path) -> int:
    return len(path.relative_to(root).parts)


class ExpertBratsBuilder(ExpertVolumeBuilder):
    """Brain-tumour questions answered with a BRATS (and MEASURE) call, from BraTS cases.

    Expected layout of --source (a BraTS training release)::

        SOURCE/
          HGG/Brats18_2013_2_1/Brats18_2013_2_1_{t1,t1ce,t2,flair,seg}.nii.gz   # 2018/2019
          LGG/...
        or
          BraTS20_Training_001/BraTS20_Training_001_{flair,t1,t1ce,t2,seg}.nii.gz
          name_mapping.csv        # optional: Grade (HGG/LGG) per BraTS_20xx_subject_ID

    Cases are the folders holding the four sequences (BraTS 2023 names -t1c,
    -t1n, -t2w, -t2f are accepted; the label 3 of 2023 is the enhancing tumour
    4). Label source (--labels): "reference" uses *_seg (labels 1 necrotic
    core, 2 oedema, 4 enhancing), "brats" runs the BraTS expert (--weights,
    --device), "auto" (default) uses *_seg when present.

    Conversation (as the agent runs it): model cards + "T1(contrast
    enhanced): <image>, T1: <image>, T2: <image>, FLAIR: <image>" + "These are
    different MRI modalities." + question -> "<BRATS()>" call -> the BraTS
    overlay and result text -> (how-large: a MEASURE call) -> the answer. The
    four images are the axial slice of the BraTS overlay. Question kinds
    (--kinds, --questions-per-case): segment, is-there (necrotic core /
    oedema / enhancing tumour: yes/no), grade (HGG/LGG from the folder names
    or name_mapping.csv), how-large (volume from MEASURE).

    Splits: train, or a hash split by case with --test-fraction.
    Output: train.json [, test.json]; images/CASE/*.png.
    """

    name = "expert-brats"
    summary = "BRATS expert conversations from BraTS cases (t1ce/t1/t2/flair [+ seg])"
    KINDS = KINDS
    MEASURE_KINDS = ("how-large",)
    unit = "case"
    options = volume_options(
        BuilderOption(
            "labels",
            "choice",
            "auto",
            "Label source: auto, reference (*_seg) or brats (run the expert).",
            ("auto", "reference", "brats"),
        ),
        expert="BraTS",
        unit="case",
        per_unit=3,
        kinds=KINDS,
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._grades: dict[str, str] | None = None

    def check_source(self) -> None:
        """Check that there are BraTS cases and the options make sense."""
        if not self.source.is_dir():
            raise InputError("expert-brats --source must be a folder", self.source)
        if not find_cases(self.source):
            raise InputError(
                "no BraTS cases found (expected folders with CASE_t1ce, _t1, _t2, _flair "
                f".nii.gz files; {listing(self.source)})",
                self.source,
            )
        self.check_options()

    def annotation_files(self) -> list[Path]:
        """name_mapping.csv when present."""
        return sorted(self.source.glob("name_mapping*.csv"))

    def _grade_table(self) -> dict[str, str]:
        if self._grades is None:
            table: dict[str, str] = {}
            for path in self.annotation_files():
                with open(path, newline="", encoding="utf-8") as handle:
                    for row in csv.DictReader(handle):
                        grade = (row.get("Grade") or "").strip().upper()
                        for key, value in row.items():
                            if key and "subject_id" in key.lower() and value and grade:
                                table[value.strip()] = grade
            self._grades = table
        return self._grades

    def grade(self, case: str, folder: Path) -> str | None:
        """HGG / LGG from an ancestor folder name or name_mapping.csv, else None."""
        for part in folder.relative_to(self.source).parts:
            if part.upper() in GRADES:
                return part.upper()
        found = self._grade_table().get(case)
        return found if found in GRADES else None

    def items(self) -> Iterable[Item]:
        """One item per case, in path order."""
        for case, files in find_cases(self.source):
            split = self.split_of(case)
            data = {k: str(v) for k, v in files.items()}
            data["grade"] = self.grade(case, files["flair"].parent) or ""
            yield Item(id=f"expert-brats/{case}", split=split, data=data)

    def _mode(self, data: dict[str, str]) -> str:
        mode = self.opts["labels"]
        if mode == "auto":
            return "reference" if "seg" in data else "brats"
        if mode == "reference" and "seg" not in data:
            raise SkipRow("no *_seg file (reference labels)")
        return mode

    def _result(self, named: dict[str, Any], data: dict[str, str]) -> Any:
        if self._mode(data) == "brats":
            from medm3.experts.registry import get_expert

            expert = get_expert("brats", device=self.opts["device"], weights=self.opts["weights"])
            return expert.run(named, "", use_cache=False)
        import numpy as np

        from medm3.data.reference_experts import ReferenceBrats
        from medm3.imaging.io import load_image
        from medm3.imaging.overlay import check_mask

        try:
            labels = check_mask(named["flair"], load_image(data["seg"]))
        except InputError as exc:
            raise BadRow(f"bad segmentation ({exc.message})") from None
        values = {int(v) for v in np.unique(labels)}
        if 3 in values and 4 not in values:  # BraTS 2023: 3 is the enhancing tumour
            labels = np.where(labels == 3, 4, labels)
            values = (values - {3}) | {4}
        if not values <= {0, 1, 2, 4}:
            raise BadRow(f"segmentation holds labels {sorted(values - {0, 1, 2, 4})}")
        return ReferenceBrats(labels.astype(np.uint8)).run(named, "", use_cache=False)

    def convert(self, item: Item, ctx: ItemContext) -> list[dict[str, Any]]:
        """The rows of one case."""
        from medm3.imaging.io import load_image

        data = item.data
        case = item.id.split("/", 1)[1]
        named = {}
        for key, _ in prompts.BRATS_SEQUENCES:
            try:
                named[key] = load_image(data[key], modality="MR")
            except InputError as exc:
                raise BadRow(f"unreadable {key} ({exc.message})") from None
        try:
            result = self._result(named, data)
        except InputError as exc:  # ExpertError: e.g. sequences on different grids
            raise BadRow(exc.message) from None
        index = result.overlays[0].slice_index if result.overlays else None
        views = [
            save_view(ctx, named[key], index, f"images/{case}/{key}_axial_{index}.png")
            for key, _ in prompts.BRATS_SEQUENCES
        ]
        case_info = _Case(case, named, result, index, views, data["grade"])
        plan = self._plan(case_info.present, case_info.grade, ctx)
        return [
            self._row(f"{item.id}#q{k}", kind, target, case_info, ctx)
            for k, (kind, target) in enumerate(plan)
        ]

    def _row(
        self, row_id: str, kind: str, target: int | None, case: _Case, ctx: ItemContext
    ) -> dict[str, Any]:
        """One question about a case: the BRATS call, maybe MEASURE, the answer."""
        protocol = self.protocol()
        name = REGION_NAMES.get(target, WHOLE_TUMOR) if target is not None else ""
        question = templates.pick(ctx.rng, templates.BRATS[kind], name)
        conv = self.conversation(
            protocol.brats_first_turn(question, cards=self.cards()), case.views
        )
        segment = kind == "segment" and protocol.released
        reply = protocol.trigger_reply("BRATS", segmented=True) if segment else None
        overlay = f"images/{case.name}/brats_axial_{case.index}.png"
        shown = ShownSlice(case.named["t1ce"], "axial", case.index, "auto")
        conv.call(case.result, question, ctx, overlay, shown=shown, reply=reply)
        meta = self.row_meta(kind, question, ("case", case.name), case.index)
        if segment:  # the trained answer after "I segmented any brain tumors ..."
            conv.answer("All tumors were segmented")
        elif kind == "segment":
            conv.answer(_segment_answer(case.present))
        elif kind == "is-there":
            conv.answer("yes" if target in case.present else "no")
            meta.update(region=name, answer_type="CLOSED")
        elif kind == "grade":
            conv.answer(GRADES[case.grade])
            meta["grade"] = case.grade
        else:
            measured = self._measure(case.named["flair"], case.result, target)
            slice_no = measured.overlays[0].slice_index if measured.overlays else "none"
            overlay = f"images/{case.name}/measure_{slug(name)}_{slice_no}.png"
            conv.call(measured, question, ctx, overlay)
            conv.answer(_volume_answer(name, measured.measurements))
            meta["region"] = name
        return conv.row(row_id, meta)

    def _measure(self, flair: Any, previous: Any, target: int | None) -> Any:
        """MEASURE on the BraTS label map (``all`` for the whole tumour), as the agent chains it."""
        from medm3.experts.brats import LABEL_NAMES

        return run_measure(flair, previous, "all" if target is None else LABEL_NAMES[target])

    def _plan(self, present: list[int], grade: str, ctx: ItemContext) -> list[tuple[str, Any]]:
        candidates: dict[str, list[Any]] = {
            "segment": [None],
            "is-there": sorted(REGION_NAMES),
            "grade": [None] if grade in GRADES else [],
            "how-large": ([None] if present else [])
            + [v for v in sorted(REGION_NAMES) if v in present],
        }
        return self.draw_plan(candidates, ctx, "no question of the requested kinds applies")


@dataclass
class _Case:
    """One converted case: its sequences, the BraTS result and the shown views."""

    name: str
    named: dict[str, Any]
    result: Any
    index: int | None
    views: list[str]
    grade: str

    @property
    def present(self) -> list[int]:
        """BraTS labels present in the result."""
        return [int(v) for v in self.result.info.get("labels_present", [])]


def _segment_answer(present: list[int]) -> str:
    from medm3.imaging.overlay import label_color_name

    if not present:
        return "No tumor was found."
    colours = {v: label_color_name(v) for v in present}
    parts = ["The whole tumor is shown in all colors"]
    core = [colours[v] for v in (1, 4) if v in colours]
    if core:
        parts.append(f"the tumor core in {templates.join_names(core)}")
    if 4 in colours:
        parts.append(f"the enhancing tumor in {colours[4]}")
    if 2 in colours:
        parts.append(f"the peritumoral edema in {colours[2]}")
    return "; ".join(parts) + "."


def _volume_answer(name: str, rows: list[dict[str, Any]]) -> str:
    total = sum(float(r["volume_ml"]) for r in rows if r.get("voxels"))
    if name == WHOLE_TUMOR:
        return f"The whole tumor has a volume of {templates.format_ml(total)} mL."
    return f"The {name} has a volume of {templates.format_ml(total)} mL."
