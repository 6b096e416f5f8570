"""PathVQA (He et al. 2020), from the Hugging Face parquet release.

Layout: ``data/{train,validation,test}-*.parquet`` with columns image (bytes),
question, answer (see :class:`PathVqaBuilder`, also ``m3 data build pathvqa
--help``). Rows: ``<image>\\n{question}`` -> answer; yes/no answers are CLOSED.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from medm3.data.base import BadRow, Builder, Item, ItemContext
from medm3.data.llava import vqa_row
from medm3.data.records import closed_answer_type, listing
from medm3.errors import InputError, MissingDependencyError

#: File-name prefixes of the parquet shards -> output split.
SPLIT_PREFIXES: tuple[tuple[str, str], ...] = (
    ("train", "train"),
    ("validation", "val"),
    ("valid", "val"),
    ("val", "val"),
    ("test", "test"),
)


def _pyarrow() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingDependencyError("pyarrow", "data", "The pathvqa builder") from None
    return pq


def _split_of(path: Path) -> str | None:
    stem = path.name.lower()
    for prefix, split in SPLIT_PREFIXES:
        if stem.startswith(prefix + "-") or stem.startswith(prefix + "_") or stem == prefix:
            return split
        if stem.startswith(prefix + "."):
            return split
    return None


def _image_suffix(data: bytes, name: str) -> str:
    if data.startswith(b"\xff\xd8"):
        return ".jpg"
    if data.startswith(b"\x89PNG"):
        return ".png"
    suffix = Path(name).suffix.lower()
    return suffix if suffix in (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff") else ".img"


class PathVqaBuilder(Builder):
    """PathVQA from the Hugging Face parquet files (e.g. flaviagiammarino/path-vqa).

    Expected layout of --source (the dataset repository as downloaded)::

        SOURCE/
          data/train-00000-of-00003.parquet ...     # or the parquet files directly
          data/validation-00000-of-00001.parquet
          data/test-00000-of-00001.parquet

    Columns: image (struct with the encoded image bytes and a path), question,
    answer. Files are assigned to splits by their name prefix (train,
    validation -> val, test) and read in sorted order.

    Output: train.json, val.json, test.json; images/ holds each distinct image
    once (named by the sha256 of its bytes). Row: "<image>\\n{question}" ->
    "{answer}"; answer_type is CLOSED for yes/no answers, else OPEN (the
    vila-m3 protocol scores the yes/no test questions).
    Needs pyarrow.
    """

    name = "pathvqa"
    summary = "PathVQA (Hugging Face parquet): pathology VQA, yes/no = CLOSED"
    shard_size = 1000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._table_file: Path | None = None
        self._table: Any = None

    def _files(self) -> list[tuple[Path, str]]:
        if self.source.is_file():
            candidates = [self.source]
        else:
            candidates = sorted(self.source.rglob("*.parquet"))
        out = []
        for path in candidates:
            split = _split_of(path)
            if split is not None:
                out.append((path, split))
        order = {"train": 0, "val": 1, "test": 2}
        return sorted(out, key=lambda p: (order[p[1]], p[0].as_posix()))

    def check_source(self) -> None:
        """Check that there are parquet files named by split."""
        _pyarrow()
        if not self._files():
            where = self.source if self.source.is_dir() else self.source.parent
            raise InputError(
                "not a PathVQA parquet release: expected data/{train,validation,test}-*.parquet "
                f"({listing(where)})",
                self.source,
            )
        pq = _pyarrow()
        for path, _ in self._files():
            try:
                names = set(pq.ParquetFile(path).schema_arrow.names)
            except Exception as exc:
                raise InputError(f"not a readable parquet file: {exc}", path) from None
            missing = {"image", "question", "answer"} - names
            if missing:
                raise InputError(
                    f"parquet file lacks the column(s) {', '.join(sorted(missing))}", path
                )

    def annotation_files(self) -> list[Path]:
        """The parquet files (they hold the images too)."""
        return [path for path, _ in self._files()]

    def items(self) -> Iterable[Item]:
        """One item per parquet row: ``pathvqa/{split}/{index in split}``."""
        pq = _pyarrow()
        counters: dict[str, int] = {}
        for path, split in self._files():
            rows = pq.ParquetFile(path).metadata.num_rows
            for row in range(rows):
                index = counters.get(split, 0)
                counters[split] = index + 1
                yield Item(id=f"pathvqa/{split}/{index:06d}", split=split, data=(str(path), row))

    def _row(self, file: str, row: int) -> dict[str, Any]:
        if self._table_file != Path(file):
            pq = _pyarrow()
            self._table = pq.read_table(file, columns=["image", "question", "answer"])
            self._table_file = Path(file)
        return self._table.slice(row, 1).to_pylist()[0]

    def convert(self, item: Item, ctx: ItemContext) -> list[dict[str, Any]]:
        """One VQA row; the image bytes are written once under ``images/``."""
        file, row = item.data
        record = self._row(file, row)
        question = record.get("question")
        answer = record.get("answer")
        if not isinstance(question, str) or not question.strip():
            raise BadRow("missing 'question'")
        if not isinstance(answer, str) or not answer.strip():
            raise BadRow("missing 'answer'")
        image = record.get("image")
        data = image.get("bytes") if isinstance(image, dict) else None
        if not isinstance(data, (bytes, bytearray)) or not data:
            raise BadRow("missing image bytes")
        digest = hashlib.sha256(data).hexdigest()[:20]
        suffix = _image_suffix(bytes(data), str(image.get("path") or ""))
        rel = f"images/{digest}{suffix}"
        if not (ctx.out / rel).is_file():
            ctx.write_bytes(rel, bytes(data))
        answer_type = closed_answer_type(answer)
        meta = {
            "dataset": self.name,
            "question_type": "yes/no" if answer_type == "CLOSED" else "open",
            "answer_type": answer_type,
            "source_file": Path(file).name,
            "source_row": row,
        }
        return [vqa_row(item.id, question, answer.strip(), rel, meta)]
