"""VQA-RAD (Lau et al. 2018), from its OSF release.

Rows are plain VQA conversations: ``<image>\\n{question}`` -> ``{answer}``
(:func:`medm3.prompts.first_turn` without model cards or modality sentence),
one per question. The test set (phrase types ``test_freeform`` and
``test_para``: 451 questions, 251 closed / 200 open) is written to
``test.json``, everything else to ``train.json``. ``answer_type`` keeps
``CLOSED`` / ``OPEN`` (the ``vila-m3`` protocol scores the closed test
questions only; that selection belongs to the evaluation).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from medm3.data.base import BadRow, Builder, Item, ItemContext
from medm3.data.llava import vqa_row
from medm3.data.records import listing, place_image, read_json_list, record_key, vqa_fields
from medm3.errors import InputError

#: The annotation file of the OSF release.
ANNOTATION = "VQA_RAD Dataset Public.json"
#: Image folder names seen in the release (the first that exists is used).
IMAGE_DIRS = ("VQA_RAD Image Folder", "images", "VQA_RAD_Image_Folder")
#: Phrase types of the test set.
TEST_PHRASES = ("test_freeform", "test_para")
#: All phrase types of the release.
PHRASES = ("freeform", "para", *TEST_PHRASES)


class VqaRadBuilder(Builder):
    """VQA-RAD from the OSF release (https://osf.io/89kps/).

    Expected layout of --source (the unzipped OSF download)::

        SOURCE/
          VQA_RAD Dataset Public.json     # list of question records
          VQA_RAD Image Folder/           # synpic*.jpg

    Record fields used: qid, image_name, question, answer, answer_type
    (CLOSED/OPEN), phrase_type (freeform/para -> train; test_freeform/test_para
    -> test), image_organ and question_type (kept in the rows). --source may also
    be the JSON file itself when the image folder lies beside it.

    Output: train.json, test.json; images/ holds copies of the images used.
    Row: "<image>\\n{question}" -> "{answer}", plus qid, phrase_type,
    answer_type, question_type (VQA-RAD's: PRES, ABN ...) and organ.
    """

    name = "vqa-rad"
    summary = "VQA-RAD (OSF json + image folder): radiology VQA, test = test_* phrase types"
    splits = ("train", "test")

    def _root(self) -> Path:
        return self.source.parent if self.source.is_file() else self.source

    def _annotation(self) -> Path:
        return self.source if self.source.is_file() else self.source / ANNOTATION

    def _image_dir(self) -> Path | None:
        for name in IMAGE_DIRS:
            if (self._root() / name).is_dir():
                return self._root() / name
        return None

    def check_source(self) -> None:
        """Check for the annotation JSON and the image folder."""
        if not self._annotation().is_file():
            raise InputError(
                f"not a VQA-RAD release: expected {ANNOTATION!r} and "
                f"{IMAGE_DIRS[0]!r}/ ({listing(self._root())})",
                self.source,
            )
        if self._image_dir() is None:
            raise InputError(
                f"VQA-RAD image folder not found: expected {IMAGE_DIRS[0]!r}/ beside "
                f"{ANNOTATION!r} ({listing(self._root())})",
                self._root(),
            )

    def annotation_files(self) -> list[Path]:
        """The annotation JSON."""
        return [self._annotation()]

    def items(self) -> Iterable[Item]:
        """One item per question record, in file order."""
        records = read_json_list(self._annotation())
        seen: dict[str, int] = {}
        for index, record in enumerate(records):
            key = record_key(record, "qid", index)
            seen[key] = seen.get(key, 0) + 1
            if seen[key] > 1:  # the release repeats a few qids: keep them apart
                key = f"{key}-{seen[key]}"
            phrase = str(record.get("phrase_type", "")).strip() if isinstance(record, dict) else ""
            split = "test" if phrase in TEST_PHRASES else "train"
            yield Item(id=f"vqa-rad/{key}", split=split, data=record)

    def convert(self, item: Item, ctx: ItemContext) -> list[dict[str, Any]]:
        """One VQA row; the image is copied under ``images/``."""
        record, question, answer, image_name, answer_type = vqa_fields(item.data, "image_name")
        phrase = str(record.get("phrase_type", "")).strip()
        if phrase not in PHRASES:
            raise BadRow(f"unknown phrase_type {phrase!r}")
        folder = self._image_dir()
        assert folder is not None
        path = folder / Path(image_name).name
        image = place_image(ctx, path, f"images/{path.name}")
        meta = {
            "dataset": self.name,
            "qid": str(record.get("qid", "")),
            "phrase_type": phrase,
            "question_type": str(record.get("question_type", "")).strip() or "other",
            "answer_type": answer_type,
            "organ": str(record.get("image_organ", "")).strip(),
        }
        return [vqa_row(item.id, question, answer, image, meta)]
