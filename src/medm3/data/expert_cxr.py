"""Expert-augmented chest X-ray conversations (the CXR expert's 4th-stage training data).

Layouts: CheXpert (``train.csv``/``valid.csv`` + JPEGs), NIH ChestX-ray14
(``Data_Entry_2017*.csv`` + ``images*/``), or a folder built by ``m3 data
build`` (its rows get the expert turns in front); see :class:`ExpertCxrBuilder`
and ``m3 data build expert-cxr --help``. Conversation: model cards + image +
"This is a CXR image." + question -> ``<CXR()>`` -> the CXR expert's text ->
the answer from the labels. Label tables, questions and probabilities:
:mod:`medm3.data.cxr_labels`.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from medm3 import prompts
from medm3.agent.protocol import get_protocol
from medm3.data.base import BadRow, Builder, BuilderOption, Item, ItemContext, SkipRow
from medm3.data.conversation import PROTOCOL_OPTION, ExpertConversation, expert_model_cards
from medm3.data.cxr_labels import (
    CHEXPERT_FILES,
    CHEXPERT_LABELS,
    NIH_FILES,
    chexpert_labels,
    csv_columns,
    draw_questions,
    nih_labels,
    read_lines,
    read_probabilities,
)
from medm3.data.records import listing
from medm3.errors import InputError


class ExpertCxrBuilder(Builder):
    """Chest X-ray questions with a CXR expert call, from CheXpert, ChestX-ray14 or a built set.

    Conversation (as the agent runs it): model cards + <image> + "This is a
    CXR image." + question -> "... Let me first trigger <CXR()>." -> the CXR
    expert's "label: yes/no" lines + the follow-up instruction -> the answer.
    The expert text comes from the real CXR expert class, on probabilities
    computed here (--weights/--device: batched predict_batch) or read from
    --probabilities (JSON {key: {label: p}} or CSV; key = the label file's
    Path / Image Index, or the row's image path for a built set).

    Accepted --source layouts:

        CheXpert (CheXpert-v1.0 or -small):
          SOURCE/train.csv, valid.csv [, test.csv]   # Path, Frontal/Lateral, 14 labels
          SOURCE/train/patient00001/study1/view1_frontal.jpg ...
          (Path may start with the dataset folder name; labels 1 / 0 / -1 / blank:
          positive / negative / uncertain / not mentioned)
        NIH ChestX-ray14:
          SOURCE/Data_Entry_2017[_v2020].csv          # Image Index, Finding Labels a|b
          SOURCE/train_val_list.txt, test_list.txt    # optional splits
          SOURCE/images/ or images_001/images/ ...    # the PNGs
        A folder built by `m3 data build` with one image per row (e.g. mimic-cxr
        reports, for "mimic_report_expert"): each row's conversation gets the
        expert turns in front of it, its first question kept.

    Questions (CheXpert/NIH, --questions-per-image, several phrasings each):
    is-there ("Is there pleural effusion in this chest X-ray?" -> yes/no from
    the definite labels; uncertain and unmentioned CheXpert labels are not
    asked) and findings ("What abnormalities are present?" -> the positive
    labels). Lateral CheXpert views are left out unless --include-lateral.

    Output: train.json [, val.json, test.json]; images/ holds the X-rays.
    """

    name = "expert-cxr"
    summary = "CXR expert conversations: CheXpert / ChestX-ray14 labels, or wrap a built set"
    shard_size = 64
    options = (
        BuilderOption("probabilities", "path", None, "Precomputed probabilities (JSON or CSV)."),
        BuilderOption("weights", "path", None, "CXR expert weights folder (else the cache)."),
        BuilderOption("device", "str", None, "Device for the CXR expert (cpu, cuda ...)."),
        BuilderOption("questions-per-image", "int", 2, "Questions per image (label layouts)."),
        BuilderOption("include-lateral", "flag", False, "Keep lateral CheXpert views."),
        BuilderOption("experts", "str", "", "Experts in the model cards (default: all)."),
        PROTOCOL_OPTION,
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._probs: dict[str, dict[str, float]] | None = None
        self._computed: dict[str, Any] = {}
        self._cards: str | None = None
        self._nih_index: dict[str, Path] | None = None

    # ------------------------------------------------------------- layout
    def layout(self) -> str:
        """``chexpert``, ``nih`` or ``built`` (raises for anything else)."""
        if not self.source.is_dir():
            raise InputError("expert-cxr --source must be a folder", self.source)
        if (self.source / "manifest.json").is_file():
            return "built"
        if any((self.source / name).is_file() for name in NIH_FILES):
            return "nih"
        if any((self.source / name).is_file() for name, _ in CHEXPERT_FILES):
            return "chexpert"
        raise InputError(
            "not a CheXpert, ChestX-ray14 or built folder: expected train.csv/valid.csv, "
            f"Data_Entry_2017.csv or manifest.json ({listing(self.source)})",
            self.source,
        )

    def check_source(self) -> None:
        """Check the layout, the label columns and the probabilities file."""
        layout = self.layout()
        if layout == "chexpert":
            for path in self._chexpert_files():
                columns = csv_columns(path)
                missing = [c for c in ("Path", *CHEXPERT_LABELS) if c not in columns]
                if missing:
                    raise InputError(
                        f"not a CheXpert label file: missing {', '.join(missing[:3])}", path
                    )
        elif layout == "nih":
            columns = csv_columns(self._nih_file())
            missing = [c for c in ("Image Index", "Finding Labels") if c not in columns]
            if missing:
                raise InputError(
                    f"not a ChestX-ray14 label file: missing {', '.join(missing)}",
                    self._nih_file(),
                )
        if self.opts["probabilities"]:
            path = Path(self.opts["probabilities"])
            if not path.is_file():
                raise InputError("probabilities file not found", path)
            self._probs = read_probabilities(path)
        if self.opts["questions_per_image"] < 1:
            raise InputError("--questions-per-image must be at least 1")

    def _chexpert_files(self) -> list[Path]:
        return [self.source / n for n, _ in CHEXPERT_FILES if (self.source / n).is_file()]

    def _nih_file(self) -> Path:
        return next(self.source / n for n in NIH_FILES if (self.source / n).is_file())

    def annotation_files(self) -> list[Path]:
        """Label files (or the built set's JSONs) and the probabilities file."""
        layout = self.layout()
        files: list[Path] = []
        if layout == "chexpert":
            files = self._chexpert_files()
        elif layout == "nih":
            files = [self._nih_file()]
            files += [self.source / n for n in ("train_val_list.txt", "test_list.txt")]
        else:
            from medm3.data.llava import read_manifest

            files = [self.source / f for f in read_manifest(self.source)["files"].values()]
        if self.opts["probabilities"]:
            files.append(Path(self.opts["probabilities"]))
        return [f for f in files if f.is_file()]

    # -------------------------------------------------------------- items
    def items(self) -> Iterable[Item]:
        """One item per X-ray (label layouts) or per row (built set)."""
        layout = self.layout()
        if layout == "chexpert":
            yield from self._chexpert_items()
        elif layout == "nih":
            yield from self._nih_items()
        else:
            yield from self._built_items()

    def _chexpert_items(self) -> Iterator[Item]:
        for file_name, split in CHEXPERT_FILES:
            path = self.source / file_name
            if not path.is_file():
                continue
            with open(path, newline="", encoding="utf-8") as handle:
                for index, row in enumerate(csv.DictReader(handle)):
                    view = (row.get("Frontal/Lateral") or "").strip().lower()
                    if view == "lateral" and not self.opts["include_lateral"]:
                        continue
                    key = (row.get("Path") or "").strip() or f"row{index}"
                    yield Item(id=f"expert-cxr/{split}/{key}", split=split, data=dict(row))

    def _nih_items(self) -> Iterator[Item]:
        test = read_lines(self.source / "test_list.txt")
        with open(self._nih_file(), newline="", encoding="utf-8") as handle:
            for index, row in enumerate(csv.DictReader(handle)):
                key = (row.get("Image Index") or "").strip() or f"row{index}"
                split = "test" if key in test else "train"
                yield Item(id=f"expert-cxr/{split}/{key}", split=split, data=dict(row))

    def _built_items(self) -> Iterator[Item]:
        from medm3.data.llava import read_dataset

        for split, rows in read_dataset(self.source).items():
            for row in rows:
                yield Item(id=f"expert-cxr/{split}/{row['id']}", split=split, data=row)

    # -------------------------------------------------------- image/labels
    def _image_key_path(self, item: Item) -> tuple[str, Path]:
        """The probabilities key and the file of an item's X-ray."""
        layout = self.layout()
        if layout == "built":
            from medm3.data.llava import row_images

            images = row_images(item.data)
            if len(images) != 1:
                raise BadRow(f"the row has {len(images)} images; expert-cxr needs exactly one")
            return images[0], self.source / images[0]
        if layout == "nih":
            key = (item.data.get("Image Index") or "").strip()
            if not key:
                raise BadRow("missing 'Image Index'")
            return key, self._nih_image(key)
        key = (item.data.get("Path") or "").strip()
        if not key:
            raise BadRow("missing 'Path'")
        return key, self._chexpert_image(key)

    def _chexpert_image(self, key: str) -> Path:
        rel = Path(key)
        candidates = [self.source / rel, self.source.parent / rel]
        if len(rel.parts) > 1:
            candidates.append(self.source / Path(*rel.parts[1:]))
        return next((c for c in candidates if c.is_file()), candidates[0])

    def _nih_image(self, name: str) -> Path:
        if self._nih_index is None:
            index: dict[str, Path] = {}
            folders = [self.source / "images", *sorted(self.source.glob("images_*/images"))]
            folders += sorted(self.source.glob("images_*"))
            for folder in folders:
                if folder.is_dir():
                    with os.scandir(folder) as entries:
                        for entry in entries:
                            index.setdefault(entry.name, Path(entry.path))
            self._nih_index = index
        return self._nih_index.get(name, self.source / "images" / name)

    def prepare(self, items: Sequence[Item]) -> None:
        """Compute the expert's probabilities of a shard in one batch (unless precomputed)."""
        self._computed = {}
        if self.opts["probabilities"]:
            return
        loaded: list[tuple[str, Any]] = []
        for item in items:
            try:
                _, path = self._image_key_path(item)
                loaded.append((item.id, _load_xray(path)))
            except (BadRow, SkipRow) as exc:
                self._computed[item.id] = exc
        if not loaded:
            return
        from medm3.experts.registry import get_expert

        expert = get_expert("cxr", device=self.opts["device"], weights=self.opts["weights"])
        ensemble = get_protocol(self.opts["protocol"]).ensemble()  # released: the reference's
        probabilities = expert.predict_batch(  # type: ignore[attr-defined]
            [image for _, image in loaded], ensemble=ensemble
        )
        for (item_id, image), probs in zip(loaded, probabilities, strict=True):
            self._computed[item_id] = (image, probs)

    def _image_and_probs(self, item: Item) -> tuple[Any, dict[str, float], str, Path]:
        key, path = self._image_key_path(item)
        if self.opts["probabilities"]:
            if self._probs is None:
                self._probs = read_probabilities(Path(self.opts["probabilities"]))
            if key not in self._probs:
                raise SkipRow("no precomputed probabilities for the image")
            return _load_xray(path), self._probs[key], key, path
        found = self._computed.get(item.id)
        if isinstance(found, (BadRow, SkipRow)):
            raise found
        if found is None:  # convert() called without prepare()
            self.prepare([item])
            found = self._computed[item.id]
            if isinstance(found, (BadRow, SkipRow)):
                raise found
        image, probs = found
        return image, probs, key, path

    # ------------------------------------------------------------ convert
    def convert(self, item: Item, ctx: ItemContext) -> list[dict[str, Any]]:
        """Rows of one X-ray: the expert call, then the answer from the labels."""
        from medm3.data.reference_experts import FixedCXR

        layout = self.layout()
        if layout == "built":
            questions = [self._built_question(item)]
        else:
            row = item.data
            labels = nih_labels(row) if layout == "nih" else chexpert_labels(row)
            questions = draw_questions(labels, self.opts["questions_per_image"], ctx.rng)
        image, probs, _, path = self._image_and_probs(item)
        result = FixedCXR(probs).run(image, "", use_cache=False)
        rel = _image_rel(layout, path, self.source)
        out_image = ctx.link_or_copy(path, f"images/{rel}")
        if self._cards is None:
            self._cards = expert_model_cards(self.opts["experts"], self.opts["protocol"])
        protocol = get_protocol(self.opts["protocol"])
        rows = []
        for k, (kind, question, answer, extra) in enumerate(questions):
            conv = ExpertConversation(
                protocol.first_turn(question, "XR", cards=self._cards, chest=True),
                [out_image],
                protocol=protocol,
            )
            conv.call(result, question, ctx, "")
            if layout == "built":
                rest = extra.pop("rest")
                for role, text in rest:
                    conv.turns.append((role, text))
            else:
                conv.answer(answer)
            row_id = item.id if layout == "built" else f"{item.id}#q{k}"
            meta = {
                "dataset": self.name,
                "question_type": kind,
                "question": question,
                "protocol": protocol.name,
                **extra,
            }
            rows.append(conv.row(row_id, meta))
        return rows

    def _built_question(self, item: Item) -> tuple[str, str, str, dict[str, Any]]:
        row = item.data
        convs = row["conversations"]
        first = str(convs[0]["value"])
        question = first.replace(prompts.IMAGE_TOKEN, "").strip()
        if not question:
            raise BadRow("the first turn has no question")
        rest = [(str(t["from"]), str(t["value"])) for t in convs[1:]]
        if any(prompts.IMAGE_TOKEN in text for _, text in rest):
            raise BadRow("later turns hold images")
        from medm3.data.llava import CORE_KEYS

        meta = {k: v for k, v in row.items() if k not in CORE_KEYS}
        kind = str(meta.pop("question_type", "other"))
        for key in ("dataset", "question", "experts", "mixture"):
            meta.pop(key, None)
        return kind, question, "", {**meta, "wrapped": row["id"], "rest": rest}


# ------------------------------------------------------------------ helpers
def _load_xray(path: Path) -> Any:
    from medm3.imaging.io import load_image

    if not path.is_file():
        raise SkipRow("image file missing")
    try:
        return load_image(path, modality="XR")
    except InputError as exc:
        raise BadRow(f"unreadable image ({exc.message})") from None


def _image_rel(layout: str, path: Path, source: Path) -> str:
    """Where an X-ray goes under ``images/`` (mirrors its place in the source)."""
    if layout == "nih":
        return path.name
    try:
        rel = path.resolve().relative_to(source.resolve())
    except ValueError:
        rel = path.resolve().relative_to(source.resolve().parent)
    parts = rel.parts[1:] if layout == "built" and rel.parts[:1] == ("images",) else rel.parts
    return Path(*parts).as_posix()
