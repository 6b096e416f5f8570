"""IU-Xray (Indiana University chest X-ray collection, Open-i) report generation.

Layout: ``NLMCXR_reports.tgz`` (or its ``ecgen-radiology/*.xml``) with
FINDINGS / IMPRESSION sections, plus the optional PNG folder of
``NLMCXR_png.tgz`` (see :class:`IuXrayBuilder`, also ``m3 data build iu-xray
--help``). Rows: the report prompt -> findings + impression.
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from medm3.data.base import BadRow, Builder, BuilderOption, Item, ItemContext, SkipRow, hash_split
from medm3.data.mimic_cxr import clean_report, report_row
from medm3.data.records import listing
from medm3.errors import InputError

#: Deterministic split of the reports (R2Gen's 7:1:2 proportions), by report id.
SPLIT_FRACTIONS: tuple[tuple[str, float], ...] = (("train", 0.7), ("val", 0.1), ("test", 0.2))
#: Report sections used, by --sections.
SECTIONS: dict[str, tuple[str, ...]] = {
    "both": ("FINDINGS", "IMPRESSION"),
    "findings": ("FINDINGS",),
    "impression": ("IMPRESSION",),
}


def parse_report(xml: bytes) -> dict[str, Any]:
    """Sections and image ids of one NLMCXR report XML.

    Args:
        xml: The file content.

    Returns:
        ``{"sections": {label: text}, "images": [parentImage ids]}``.

    Raises:
        BadRow: Not parseable XML.
    """
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as exc:
        raise BadRow(f"invalid XML ({exc})") from None
    sections = {
        str(node.get("Label", "")).upper(): " ".join((node.text or "").split())
        for node in root.iter("AbstractText")
    }
    images = [str(node.get("id")) for node in root.iter("parentImage") if node.get("id")]
    return {"sections": sections, "images": images}


def _number(name: str) -> tuple[int, str]:
    match = re.match(r"(\d+)", Path(name).stem)
    return (int(match.group(1)) if match else 1 << 30, Path(name).name)


class IuXrayBuilder(Builder):
    """IU-Xray reports (NLMCXR, https://openi.nlm.nih.gov/faq#collection).

    Expected --source: the official reports archive NLMCXR_reports.tgz, or the
    folder it unpacks to (ecgen-radiology/, one XML per report). The archive
    also ships inside the torchxrayvision wheel (torchxrayvision/data/).

    Images are optional: --images is the folder of the official PNG release
    (NLMCXR_png.tgz unpacked: CXR1_1_IM-0001-3001.png ...), named by the
    report's parentImage ids. A report's first image is used. Reports whose
    image is missing (no --images, or no file) are skipped unless
    --allow-missing-images, which keeps them as text-only rows. Reports with
    neither FINDINGS nor IMPRESSION are skipped.

    Report text: the FINDINGS and IMPRESSION sections (--sections), white
    space collapsed, the collection's XXXX de-identification marks kept.
    Splits: a fixed hash of the report id, 70/10/20 train/val/test (R2Gen's
    proportions; independent of --seed).

    Output: train.json, val.json, test.json (+ images/ when given).
    """

    name = "iu-xray"
    summary = "IU-Xray / Open-i reports (NLMCXR_reports.tgz [+ PNG folder]): report generation"
    shard_size = 1000
    options = (
        BuilderOption("images", "path", None, "Folder of the NLMCXR PNG images."),
        BuilderOption(
            "allow-missing-images", "flag", False, "Keep reports without an image as text rows."
        ),
        BuilderOption(
            "sections",
            "choice",
            "both",
            "Report sections: both, findings or impression.",
            ("both", "findings", "impression"),
        ),
    )

    def check_source(self) -> None:
        """Check for the reports archive or folder (and --images when given)."""
        if self.source.is_file():
            if not tarfile.is_tarfile(self.source):
                raise InputError("not a tar archive (expected NLMCXR_reports.tgz)", self.source)
        elif not any(self._xml_files()):
            raise InputError(
                f"no report XML files found (expected NLMCXR_reports.tgz or its "
                f"ecgen-radiology/ folder; {listing(self.source)})",
                self.source,
            )
        images = self.opts["images"]
        if images and not Path(images).is_dir():
            raise InputError("image folder not found", images)

    def _xml_files(self) -> Iterator[Path]:
        if (self.source / "ecgen-radiology").is_dir():
            yield from (self.source / "ecgen-radiology").glob("*.xml")
        else:
            yield from self.source.glob("*.xml")

    def annotation_files(self) -> list[Path]:
        """The archive, or the XML files of the folder."""
        if self.source.is_file():
            return [self.source]
        return sorted(self._xml_files(), key=lambda p: _number(p.name))

    def _documents(self) -> Iterator[tuple[str, bytes]]:
        if self.source.is_file():
            with tarfile.open(self.source) as archive:
                members = [m for m in archive.getmembers() if m.isfile()]
                members = [m for m in members if m.name.endswith(".xml")]
                for member in sorted(members, key=lambda m: _number(m.name)):
                    handle = archive.extractfile(member)
                    if handle is not None:
                        yield Path(member.name).stem, handle.read()
        else:
            for path in sorted(self._xml_files(), key=lambda p: _number(p.name)):
                yield path.stem, path.read_bytes()

    def items(self) -> Iterable[Item]:
        """One item per report, by report number; parse errors become bad rows."""
        for stem, xml in self._documents():
            key = f"CXR{stem}" if stem.isdigit() else stem
            try:
                data: Any = parse_report(xml)
            except BadRow as exc:
                data = {"error": exc.reason}
            yield Item(id=f"iu-xray/{key}", split=hash_split(key, SPLIT_FRACTIONS), data=data)

    def convert(self, item: Item, ctx: ItemContext) -> list[dict[str, Any]]:
        """One report row (text-only with --allow-missing-images when there is no image)."""
        data = item.data
        if "error" in data:
            raise BadRow(data["error"])
        sections = data["sections"]
        parts = [sections.get(name, "") for name in SECTIONS[self.opts["sections"]]]
        report = clean_report(" ".join(p for p in parts if p))
        if not report:
            raise SkipRow("empty report")
        image = None
        folder = Path(self.opts["images"]) if self.opts["images"] else None
        first = data["images"][0] if data["images"] else None
        if folder is not None and first is not None and (folder / f"{first}.png").is_file():
            image = ctx.link_or_copy(folder / f"{first}.png", f"images/{first}.png")
        elif not self.opts["allow_missing_images"]:
            raise SkipRow("image missing" if first is not None else "report lists no image")
        meta = {
            "dataset": self.name,
            "report_id": item.id.split("/", 1)[1],
            "image_ids": list(data["images"]),
        }
        return [report_row(item.id, report, image, meta)]
