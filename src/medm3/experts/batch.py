"""Batch expert runs: one expert over many inputs (``m3 experts run EXPERT A B C -o OUT``).

The output folder holds one sub-folder per input (overlays, label map, DICOM-SEG
for a DICOM series, ``result.json``; written into a hidden folder and renamed
when complete) and one table in two forms, ``results.jsonl`` and ``results.csv``:
input, id, status (``ok`` / ``failed``), seconds, error, the result text and the
findings, probabilities, structures and volumes.

* Resumable: each finished input is appended to ``results.jsonl`` (one fsync'd
  line); a rerun skips the inputs already there (``retry_failed`` redoes the
  failed ones). ``batch.json`` records the expert and its settings; a rerun
  with other settings is refused.
* A bad input never stops the run: it becomes a ``failed`` row naming the problem.
* At the end both tables are rewritten atomically in input order, so where the
  inputs ran (local process or Ray actors) does not change them (except timings).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medm3.errors import InputError, MedM3Error
from medm3.experts.batch_table import read_rows, table_csv, table_jsonl

if TYPE_CHECKING:  # pragma: no cover
    from medm3.executors.base import Executor

__all__ = [
    "BATCH_CONFIG",
    "RESULTS_CSV",
    "RESULTS_JSONL",
    "BatchInput",
    "BatchSettings",
    "BatchSummary",
    "ExpertBatchWorker",
    "collect_inputs",
    "run_batch",
]

RESULTS_JSONL = "results.jsonl"
RESULTS_CSV = "results.csv"
BATCH_CONFIG = "batch.json"
#: File suffixes ``--folder`` takes as images (folders are taken as DICOM series).
IMAGE_SUFFIXES = (
    ".nii",
    ".nii.gz",
    ".nrrd",
    ".nhdr",
    ".mha",
    ".mhd",
    ".dcm",
    ".zip",
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".tif",
    ".tiff",
)


@dataclass(frozen=True)
class BatchInput:
    """One input of a batch run.

    Attributes:
        id: Unique name of its result folder.
        input: The input as given (a path, or ``name=path`` pairs joined by ``;``).
        images: Input name (or ``""`` for the expert's first input) -> path.
        mask: Label map path for experts that take one.
    """

    id: str
    input: str
    images: dict[str, str]
    mask: str | None = None


@dataclass(frozen=True)
class BatchSettings:
    """What every input of a batch run is run with (recorded in ``batch.json``).

    Attributes:
        expert: Expert name.
        arg: Argument string (as in ``<NAME(arg)>``).
        modality: Modality override.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        weights: Local weights folder/file.
        labels: Label names JSON for masks.
        plane: Overlay plane.
        slice_index: Overlay slice.
        use_cache: Use the result cache.
    """

    expert: str
    arg: str = ""
    modality: str | None = None
    device: str = "auto"
    weights: str | None = None
    labels: str | None = None
    plane: str = "axial"
    slice_index: int | None = None
    use_cache: bool = True

    def fingerprint(self) -> dict[str, Any]:
        """What a resumed run must match."""
        doc = asdict(self)
        for key in ("device", "use_cache"):  # where it runs does not change results
            doc.pop(key)
        return doc


@dataclass
class BatchSummary:
    """What a batch run did.

    Attributes:
        out_dir: The output folder.
        total: Inputs in the table.
        ok: Inputs with a result.
        failed: Inputs that failed (listed in the table).
        resumed: Inputs skipped because an earlier run finished them.
    """

    out_dir: Path
    total: int
    ok: int
    failed: int
    resumed: int

    def line(self) -> str:
        """One line for the terminal."""
        return (
            f"wrote {self.out_dir}: {self.ok} ok, {self.failed} failed of {self.total} inputs "
            f"({self.resumed} done before); table {self.out_dir / RESULTS_CSV}"
        )


# ------------------------------------------------------------------ inputs
def _stem(path: str) -> str:
    name = Path(path.rstrip("/")).name
    lower = name.lower()
    for suffix in sorted(IMAGE_SUFFIXES, key=len, reverse=True):
        if lower.endswith(suffix):
            return name[: -len(suffix)] or name
    return name


def _safe(text: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return safe or "input"


def _unique_ids(raw: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    ids = []
    for base in raw:
        key = _safe(base)
        seen[key] = seen.get(key, 0) + 1
        ids.append(key if seen[key] == 1 else f"{key}-{seen[key]}")
    if len(set(ids)) != len(ids):  # "a-2" given as an id and made from "a"
        raise InputError("the inputs' ids are not unique; give an id column in the list")
    return ids


def _records(list_file: Path) -> list[dict[str, Any]]:
    if not list_file.is_file():
        raise InputError("input list not found", list_file)
    try:
        text = list_file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the input list: {exc}", list_file) from None
    suffix = list_file.suffix.lower()
    if suffix == ".csv":
        return [dict(r) for r in csv.DictReader(io.StringIO(text))]
    if suffix in (".jsonl", ".ndjson"):
        records = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                raise InputError(f"line {n} is not JSON", list_file) from None
            if not isinstance(record, dict):
                raise InputError(f"line {n} is not a JSON object", list_file)
            records.append(record)
        return records
    raise InputError("the input list must be a .csv or .jsonl file", list_file)


def _from_record(
    record: Mapping[str, Any], inputs: Sequence[str], base: Path, n: int, list_file: Path
) -> tuple[str | None, dict[str, str], str | None]:
    def resolve(value: Any) -> str:
        path = Path(str(value).strip())
        return str(path if path.is_absolute() else base / path)

    named = {k: resolve(record[k]) for k in inputs if str(record.get(k) or "").strip()}
    if not named:
        for key in ("input", "image", "path"):
            if str(record.get(key) or "").strip():
                named = {"": resolve(record[key])}
                break
    if not named:
        columns = ", ".join(dict.fromkeys(["input", *inputs]))
        raise InputError(f"row {n} names no input (columns: {columns})", list_file)
    if "" not in named and len(inputs) == 1:
        named = {"": next(iter(named.values()))}
    mask = record.get("mask")
    row_id = str(record.get("id") or "").strip() or None
    return row_id, named, resolve(mask) if mask and "mask" not in named else None


def collect_inputs(
    tokens: Sequence[str],
    inputs: Sequence[str],
    *,
    list_file: Path | None = None,
    folder: Path | None = None,
) -> list[BatchInput]:
    """The inputs of a batch run, in order: tokens, then the list, then the folder.

    Args:
        tokens: Paths given on the command line (one input each).
        inputs: The expert's input names (``("image",)``, BraTS's four ...).
        list_file: CSV or JSONL with an ``input`` (or ``image``/``path``) column,
            or one column per input name; optional ``id`` and ``mask`` columns.
            Relative paths are relative to the list's folder.
        folder: Every image file and sub-folder (a DICOM series) in it, sorted.

    Raises:
        InputError: No inputs, an unreadable list, a missing folder, or
            positional/folder inputs for an expert that needs named inputs.
    """
    multi = len([n for n in inputs if n != "mask"]) > 1
    entries: list[tuple[str | None, dict[str, str], str | None]] = []
    if (tokens or folder is not None) and multi:
        raise InputError(
            f"this expert takes named inputs ({', '.join(inputs)}): give them with "
            "--list FILE.csv, one column per input"
        )
    entries += [(None, {"": t}, None) for t in tokens]
    if list_file is not None:
        records = _records(list_file)
        base = list_file.parent
        entries += [_from_record(r, inputs, base, n, list_file) for n, r in enumerate(records, 2)]
    if folder is not None:
        if not folder.is_dir():
            raise InputError("input folder not found", folder)
        for path in sorted(folder.iterdir()):
            if path.name.startswith("."):
                continue
            if path.is_dir() or path.name.lower().endswith(IMAGE_SUFFIXES):
                entries.append((None, {"": str(path)}, None))
    if not entries:
        raise InputError("no inputs: give IMAGE paths, --list FILE or --folder DIR")
    raw_ids = [rid or _stem(next(iter(named.values()))) for rid, named, _ in entries]
    out = []
    for row_id, (_, named, mask) in zip(_unique_ids(raw_ids), entries, strict=True):
        text = named[""] if "" in named else ";".join(f"{k}={v}" for k, v in named.items())
        out.append(BatchInput(row_id, text, named, mask))
    return out


# ------------------------------------------------------------------ worker
class ExpertBatchWorker:
    """Runs one expert on batch inputs; built once per process (the model stays loaded).

    Args:
        settings: The run's settings.
        out_dir: The batch output folder (shared storage for remote workers).
    """

    def __init__(self, settings: BatchSettings, out_dir: str) -> None:
        from medm3.experts.registry import get_expert

        self.settings = settings
        self.out_dir = Path(out_dir)
        device = None if settings.device == "auto" else settings.device
        self.expert = get_expert(settings.expert, device=device, weights=settings.weights)
        self.label_names = None
        if settings.labels is not None:
            from medm3.imaging.labels import load_label_map

            self.label_names = load_label_map(Path(settings.labels))

    def __call__(self, item: BatchInput) -> dict[str, Any]:
        """The table row of one input (a failure becomes a ``failed`` row)."""
        t0 = time.perf_counter()
        row: dict[str, Any] = {"input": item.input, "id": item.id}
        try:
            result = self._run(item)
        except MedM3Error as exc:
            row.update(status="failed", error=" ".join(str(exc).split()))
        except Exception as exc:  # a bad input must not stop the run
            first = " ".join(str(exc).split())[:500]
            row.update(status="failed", error=f"{type(exc).__name__}: {first}")
        else:
            row.update(status="ok", error="")
            row.update(result)
        row["seconds"] = round(time.perf_counter() - t0, 3)
        return row

    def _run(self, item: BatchInput) -> dict[str, Any]:
        from medm3.experts.base import RunContext
        from medm3.imaging.io import load_image

        s = self.settings
        expert = self.expert
        images = {
            (name or expert.inputs[0]): load_image(path, modality=s.modality)
            for name, path in item.images.items()
        }
        if item.mask is not None:
            images["mask"] = load_image(item.mask)
        options: dict[str, Any] = {}
        if self.label_names is not None:
            options["label_names"] = self.label_names
        context = RunContext(plane=s.plane, slice_index=s.slice_index, options=options)
        result = expert.run(images, s.arg, context=context, use_cache=s.use_cache)
        self._save(item.id, result, images[expert.inputs[0]])
        return _summary(result)

    def _save(self, item_id: str, result: Any, source: Any) -> None:
        from medm3.experts.output import save_result

        final = self.out_dir / item_id
        tmp = self.out_dir / f".{item_id}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            save_result(result, tmp, source_image=source, montage=True)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _summary(result: Any) -> dict[str, Any]:
    volumes = {
        str(m.get("name")): m.get("volume_ml")
        for m in result.measurements
        if isinstance(m, Mapping) and "volume_ml" in m
    }
    return {
        "text": result.text.strip(),
        "findings": [k for k, v in result.findings.items() if v],
        "probabilities": {k: float(v) for k, v in result.probabilities.items()},
        "structures": [v for _, v in sorted(result.label_names.items()) if v != "background"],
        "volumes_ml": volumes,
    }


def _lost_row(_index: int, item: BatchInput, reason: str) -> dict[str, Any]:
    return {
        "input": item.input,
        "id": item.id,
        "status": "failed",
        "error": f"the worker died on every attempt ({reason})",
        "seconds": 0.0,
    }


# ------------------------------------------------------------------ driver
def _check_folder(out_dir: Path, settings: BatchSettings) -> None:
    """Refuse a folder holding something else, or a batch run with other settings."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("output is a file, not a folder", out_dir)
    config = out_dir / BATCH_CONFIG
    if config.is_file():
        try:
            previous = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise InputError(f"{BATCH_CONFIG} is unreadable", out_dir) from None
        now = settings.fingerprint()
        for key in now:
            if previous.get(key) != now[key]:
                raise InputError(
                    f"holds a batch run with another {key} ({previous.get(key)!r}, now "
                    f"{now[key]!r}); use a new -o folder",
                    out_dir,
                )
    elif out_dir.is_dir() and any(out_dir.iterdir()):
        raise InputError(
            f"not an m3 batch run folder (no {BATCH_CONFIG}); use a new or empty -o", out_dir
        )


def run_batch(
    settings: BatchSettings,
    items: Sequence[BatchInput],
    out_dir: str | os.PathLike[str],
    *,
    executor: Executor | None = None,
    retry_failed: bool = False,
    progress: bool | None = None,
) -> BatchSummary:
    """Run one expert over ``items``, writing result folders and the tables.

    Args:
        settings: Expert and run settings.
        items: The inputs (see :func:`collect_inputs`).
        out_dir: Output folder (new, empty or an earlier run with the same settings).
        executor: Where the inputs run (default: this process).
        retry_failed: Run the inputs that failed in an earlier run again.
        progress: Progress bar on stderr (None: when it is a terminal).

    Raises:
        InputError: The folder holds another run or is unreadable.
    """
    from medm3.executors.base import LocalExecutor, WorkerSpec
    from medm3.utils.atomic import atomic_write_text
    from medm3.utils.jsonl import PredictionWriter

    folder = Path(out_dir)
    _check_folder(folder, settings)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        folder / BATCH_CONFIG, json.dumps(settings.fingerprint(), indent=1, sort_keys=True) + "\n"
    )
    jsonl = folder / RESULTS_JSONL
    rows: dict[str, dict[str, Any]] = {r["id"]: r for r in read_rows(jsonl)}
    finished = {i for i, r in rows.items() if r.get("status") == "ok" or not retry_failed}
    pending = [item for item in items if item.id not in finished]
    resumed = len(items) - len(pending)
    executor = executor or LocalExecutor()
    spec = WorkerSpec(ExpertBatchWorker, {"settings": settings, "out_dir": str(folder)})
    bar = _bar(len(items), resumed, settings.expert, progress)
    try:
        results = executor.map(spec, pending, on_lost=_lost_row)
        with PredictionWriter(jsonl) as writer, contextlib.closing(results):
            for _, row in results:
                writer.append(row)
                rows[row["id"]] = row
                bar.update(1)
    finally:
        bar.close()
    for partial in folder.glob(".*.partial"):  # left by workers killed mid-write
        shutil.rmtree(partial, ignore_errors=True)
    ordered = [rows[item.id] for item in items if item.id in rows]
    known = {item.id for item in items}
    ordered += [r for i, r in rows.items() if i not in known]  # rows of earlier input lists
    atomic_write_text(jsonl, table_jsonl(ordered))
    atomic_write_text(folder / RESULTS_CSV, table_csv(ordered))
    current = [rows[item.id] for item in items]
    ok = sum(r.get("status") == "ok" for r in current)
    return BatchSummary(folder, len(items), ok, len(items) - ok, resumed)


def _bar(total: int, initial: int, name: str, progress: bool | None) -> Any:
    from tqdm import tqdm

    from medm3.utils.progress import progress_enabled

    enabled = progress_enabled() if progress is None else progress
    return tqdm(
        total=total,
        initial=initial,
        desc=f"m3 experts run {name}",
        unit="input",
        file=sys.stderr,
        disable=not enabled,
        dynamic_ncols=True,
    )
