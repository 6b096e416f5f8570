"""SLAKE (Liu et al. 2021), English questions only, from the official release.

Layout: ``Slake1.0/{train,validate,test}.json`` + ``imgs/xmlabN/source.jpg``
(see :class:`SlakeBuilder`, also shown by ``m3 data build slake --help``).
Rows: ``<image>\\n{question}`` -> answer; splits train / val / test.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from medm3.data.base import Builder, Item, ItemContext
from medm3.data.llava import vqa_row
from medm3.data.records import (
    find_one,
    listing,
    place_image,
    read_json_list,
    record_key,
    relative_path,
    vqa_fields,
)
from medm3.errors import InputError

#: Annotation file -> output split.
SPLIT_FILES: tuple[tuple[str, str], ...] = (
    ("train.json", "train"),
    ("validate.json", "val"),
    ("test.json", "test"),
)


class SlakeBuilder(Builder):
    """SLAKE 1.0 (English) from the official release (https://www.med-vqa.com/slake/).

    Expected layout of --source (the unzipped Slake1.0 folder)::

        SOURCE/
          train.json  validate.json  test.json   # lists of question records
          imgs/xmlab0/source.jpg ...               # img_name is relative to imgs/

    Record fields used: qid, img_name, question, answer, q_lang ("en" kept,
    "zh" dropped), answer_type (CLOSED/OPEN), modality, location and
    content_type (kept in the rows; content_type is the question_type).
    Splits: train.json -> train, validate.json -> val, test.json -> test
    (1,061 English test questions).

    Output: train.json, val.json, test.json; images/ mirrors imgs/.
    Row: "<image>\\n{question}" -> "{answer}".
    """

    name = "slake"
    summary = "SLAKE 1.0 (train/validate/test.json + imgs/): English radiology VQA"

    def _root(self) -> Path:
        found = find_one(self.source, ["train.json"])
        return found.parent if found is not None else self.source

    def check_source(self) -> None:
        """Check for the three split files and imgs/."""
        if not self.source.is_dir():
            raise InputError("SLAKE --source must be the Slake1.0 folder", self.source)
        root = self._root()
        missing = [name for name, _ in SPLIT_FILES if not (root / name).is_file()]
        if missing or not (root / "imgs").is_dir():
            need = ", ".join([*missing, *([] if (root / "imgs").is_dir() else ["imgs/"])])
            raise InputError(f"not a SLAKE release: missing {need} ({listing(root)})", self.source)

    def annotation_files(self) -> list[Path]:
        """The three split files."""
        return [self._root() / name for name, _ in SPLIT_FILES]

    def items(self) -> Iterable[Item]:
        """English question records of each split file, in file order."""
        for file_name, split in SPLIT_FILES:
            records = read_json_list(self._root() / file_name)
            for index, record in enumerate(records):
                if isinstance(record, dict) and str(record.get("q_lang", "en")).strip() != "en":
                    continue
                key = record_key(record, "qid", index)
                yield Item(id=f"slake/{split}/{key}", split=split, data=record)

    def convert(self, item: Item, ctx: ItemContext) -> list[dict[str, Any]]:
        """One VQA row; the image is copied under ``images/``."""
        record, question, answer, image_name, answer_type = vqa_fields(item.data, "img_name")
        rel = relative_path(image_name, "img_name must be relative to imgs/")
        image = place_image(ctx, self._root() / "imgs" / rel, f"images/{rel.as_posix()}")
        meta = {
            "dataset": self.name,
            "qid": str(record.get("qid", "")),
            "question_type": str(record.get("content_type", "")).strip() or "other",
            "answer_type": answer_type,
            "modality": str(record.get("modality", "")).strip(),
            "location": str(record.get("location", "")).strip(),
            "q_lang": "en",
        }
        return [vqa_row(item.id, question, answer, image, meta)]
