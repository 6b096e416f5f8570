"""MIMIC-CXR report generation, from the R2Gen / DCL annotation file.

Layout: ``annotation.json`` (``{"train"|"val"|"test": [{id, report,
image_path: [...]}]}``) + ``images/`` (see :class:`MimicCxrBuilder`, also
``m3 data build mimic-cxr --help``). Rows: :func:`medm3.prompts.report_turn`
(``<image>\\nDescribe the image in detail.``) -> the report.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from medm3 import prompts
from medm3.data.base import BadRow, Builder, BuilderOption, Item, ItemContext, SkipRow
from medm3.data.llava import GPT, HUMAN, make_row
from medm3.data.records import json_record, listing, record_key, relative_path, text_field
from medm3.errors import InputError

#: Annotation split key -> output split.
SPLITS: tuple[tuple[str, str], ...] = (("train", "train"), ("val", "val"), ("test", "test"))
#: Image roots tried under --source when --images is not given.
IMAGE_ROOTS = ("images", "files")


def clean_report(text: str) -> str:
    """Collapse white space (line breaks, runs of spaces) of a report."""
    return " ".join(text.split())


def report_row(
    row_id: str,
    report: str,
    image: str | None,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """A report-generation row: ``<image>\\nDescribe the image in detail.`` -> report.

    Args:
        row_id: Row id.
        report: The report text.
        image: Relative image path, or None for a text-only row (the prompt
            then has no image token).
        meta: Row facts (``question_type`` is set to ``report``).
    """
    first = prompts.report_turn() if image is not None else prompts.REPORT_PROMPT
    turns = [(HUMAN, first), (GPT, report)]
    return make_row(
        row_id,
        turns,
        [image] if image is not None else [],
        {
            **meta,
            "question_type": "report",
        },
    )


class MimicCxrBuilder(Builder):
    """MIMIC-CXR reports from the R2Gen/DCL ``annotation.json`` (PhysioNet credentialed).

    Expected layout of --source::

        SOURCE/
          annotation.json    # {"train": [...], "val": [...], "test": [...]}
          images/            # or files/: the MIMIC-CXR(-JPG) image tree, e.g.
                             #   p10/p10000032/s50414267/02aa804e-....jpg

    Each entry: {"id", "study_id", "subject_id", "report", "image_path": [...]}
    with image paths relative to the image root (--images overrides it).
    One row per entry with its first image: "<image>\\nDescribe the image in
    detail." -> the report (white space collapsed). Entries whose image is
    missing are skipped unless --allow-missing-images (then a text-only row).

    Output: train.json, val.json, test.json; images/ mirrors the image tree
    (copied, or linked with --image-mode).
    """

    name = "mimic-cxr"
    summary = "MIMIC-CXR reports (R2Gen/DCL annotation.json + images/): report generation"
    options = (
        BuilderOption("images", "path", None, "Image root (default: SOURCE/images or /files)."),
        BuilderOption(
            "allow-missing-images", "flag", False, "Keep entries without an image as text rows."
        ),
    )

    def _annotation(self) -> Path:
        return self.source if self.source.is_file() else self.source / "annotation.json"

    def _image_root(self) -> Path | None:
        if self.opts["images"]:
            return Path(self.opts["images"])
        root = self._annotation().parent
        for name in IMAGE_ROOTS:
            if (root / name).is_dir():
                return root / name
        return None

    def check_source(self) -> None:
        """Check for annotation.json with train/val/test lists and the image root."""
        path = self._annotation()
        if not path.is_file():
            raise InputError(
                f"not an R2Gen/DCL MIMIC-CXR folder: expected annotation.json "
                f"({listing(path.parent)})",
                self.source,
            )
        data = self._load()
        if not any(isinstance(data.get(key), list) for key, _ in SPLITS):
            raise InputError("annotation.json must hold train/val/test lists", path)
        root = self._image_root()
        if self.opts["images"] and (root is None or not root.is_dir()):
            raise InputError("image root not found", self.opts["images"])
        if root is None and not self.opts["allow_missing_images"]:
            raise InputError(
                "MIMIC-CXR image root not found: expected images/ or files/ beside "
                "annotation.json (or give --images, or --allow-missing-images)",
                path.parent,
            )

    def _load(self) -> dict[str, Any]:
        from medm3.utils.jsonio import read_json

        path = self._annotation()
        data = read_json(path, what="annotation.json")
        if not isinstance(data, dict):
            raise InputError("annotation.json must be a JSON object of split lists", path)
        return data

    def annotation_files(self) -> list[Path]:
        """annotation.json."""
        return [self._annotation()]

    def items(self) -> Iterable[Item]:
        """One item per annotation entry, splits in train/val/test order."""
        data = self._load()
        for key, split in SPLITS:
            entries = data.get(key) or []
            for index, entry in enumerate(entries):
                name = record_key(entry, "id", index)
                yield Item(id=f"mimic-cxr/{split}/{name}", split=split, data=entry)

    def convert(self, item: Item, ctx: ItemContext) -> list[dict[str, Any]]:
        """One report row."""
        entry = json_record(item.data, "entry")
        report = clean_report(text_field(entry, "report"))
        paths = entry.get("image_path")
        if isinstance(paths, str):
            paths = [paths]
        if not isinstance(paths, list) or not paths or not all(isinstance(p, str) for p in paths):
            raise BadRow("missing 'image_path' list")
        rel = relative_path(paths[0], "image_path must be relative")
        root = self._image_root()
        image = None
        if root is not None and (root / rel).is_file():
            image = ctx.link_or_copy(root / rel, f"images/{rel.as_posix()}")
        elif not self.opts["allow_missing_images"]:
            raise SkipRow("image file missing")
        meta = {
            "dataset": self.name,
            "study_id": str(entry.get("study_id", "")),
            "subject_id": str(entry.get("subject_id", "")),
        }
        return [report_row(item.id, report, image, meta)]
