"""Training mixtures: several built datasets with repeat counts -> one LLaVA JSON.

A mixture is a YAML file::

    name: vila_m3_released
    description: The fine-tuning mixture of the released VILA-M3 checkpoints.
    shuffle: false            # optional; shuffle the rows with --seed
    datasets:
      - name: radvqa
        path: vqa-rad         # a folder built by `m3 data build` (split: train) ...
        split: train          # optional, for folders (default train)
        repeat: 4
      - name: usmle
        path: usmle/train.json  # ... or any LLaVA JSON file
        repeat: 10

Relative paths resolve against ``--root`` (default: the current folder).
Every row appears ``repeat`` times (ids get ``#r1``, ``#r2`` ... for the
copies) and its image paths are rewritten relative to the output file, so the
mixed JSON works wherever it is written; each row gets ``mixture`` (the entry name).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medm3.errors import InputError, MissingDependencyError

#: Keys allowed at the top of a mixture file.
TOP_KEYS = frozenset({"name", "description", "shuffle", "datasets"})
#: Keys allowed in a dataset entry.
ENTRY_KEYS = frozenset({"name", "path", "repeat", "split", "description"})


@dataclass(frozen=True)
class MixEntry:
    """One dataset of a mixture.

    Attributes:
        name: Short name (``radvqa``), prefixed to the row ids.
        path: A built dataset folder or a LLaVA JSON file.
        repeat: How many times each row is used (0 leaves the dataset out).
        split: Split taken from a built folder.
    """

    name: str
    path: str
    repeat: int
    split: str = "train"


@dataclass
class Mixture:
    """A parsed mixture file.

    Attributes:
        name: Mixture name.
        description: Free text.
        shuffle: Shuffle the mixed rows (seeded).
        entries: The datasets.
        file: The YAML file.
    """

    name: str
    description: str = ""
    shuffle: bool = False
    entries: list[MixEntry] = field(default_factory=list)
    file: Path | None = None


def _yaml() -> Any:
    try:
        import yaml
    except ImportError:
        raise MissingDependencyError("pyyaml", "data", "m3 data mix") from None
    return yaml


def load_mixture(path: str | os.PathLike[str]) -> Mixture:
    """Read and validate a mixture YAML file.

    Raises:
        InputError: Missing file, invalid YAML or a wrong schema (one line).
    """
    file = Path(path)
    if not file.is_file():
        raise InputError("mixture file not found", file)
    yaml = _yaml()
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"not a valid YAML file: {first}", file) from None
    if not isinstance(data, dict):
        raise InputError("a mixture must be a YAML mapping with a 'datasets' list", file)
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise InputError(f"unknown key(s) {', '.join(unknown)}", file)
    datasets = data.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise InputError("'datasets' must be a non-empty list", file)
    entries: list[MixEntry] = []
    for i, raw in enumerate(datasets):
        entries.append(_entry(raw, i, file))
    names = [e.name for e in entries]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"dataset name(s) listed twice: {', '.join(dupes)}", file)
    return Mixture(
        name=str(data.get("name") or file.stem),
        description=str(data.get("description") or ""),
        shuffle=bool(data.get("shuffle", False)),
        entries=entries,
        file=file,
    )


def _entry(raw: Any, index: int, file: Path) -> MixEntry:
    where = f"datasets[{index}]"
    if not isinstance(raw, dict):
        raise InputError(f"{where} must be a mapping with name, path and repeat", file)
    unknown = sorted(set(raw) - ENTRY_KEYS)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(unknown)}", file)
    name, path, repeat = raw.get("name"), raw.get("path"), raw.get("repeat", 1)
    if not isinstance(name, str) or not name.strip():
        raise InputError(
            f"{where}: 'name' must be a non-empty string (quote YAML words like 'off')", file
        )
    if not isinstance(path, str) or not path.strip():
        raise InputError(f"{where} ({name}): 'path' must be a non-empty string", file)
    if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 0:
        raise InputError(f"{where} ({name}): 'repeat' must be an integer >= 0", file)
    split = raw.get("split", "train")
    if not isinstance(split, str) or not split:
        raise InputError(f"{where} ({name}): 'split' must be a string", file)
    return MixEntry(name=name.strip(), path=path.strip(), repeat=repeat, split=split)


def _resolve(entry: MixEntry, root: Path) -> Path:
    """The JSON file of an entry (a folder's split file, via its manifest)."""
    from medm3.data.llava import read_manifest

    path = Path(entry.path).expanduser()
    if not path.is_absolute():
        path = root / path
    if path.is_dir():
        files = read_manifest(path).get("files", {})
        if entry.split not in files:
            raise InputError(
                f"{entry.name}: the built dataset has no split {entry.split!r} "
                f"(it has: {', '.join(files) or 'none'})",
                path,
            )
        return path / files[entry.split]
    return path


def mix(
    mixture: Mixture,
    output: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    seed: int = 0,
    shuffle: bool | None = None,
    allow_missing: bool = False,
) -> dict[str, Any]:
    """Write the mixed training JSON.

    Args:
        mixture: The parsed mixture.
        output: Output JSON file.
        root: Folder relative dataset paths resolve against (default: cwd).
        overwrite: Replace an existing output file.
        seed: Seed of the shuffle.
        shuffle: Override the mixture's ``shuffle``.
        allow_missing: Leave out datasets whose files are missing instead of failing.

    Returns:
        Summary: ``{"output", "rows", "datasets": [{name, file, rows, repeat, total}],
        "missing": [names]}``.

    Raises:
        InputError: Existing output, missing datasets, invalid rows.
    """
    from medm3.data.llava import write_rows

    out = Path(output)
    if out.exists() and not overwrite:
        raise InputError("output already exists (pass --overwrite to replace it)", out)
    base = Path(root) if root is not None else Path.cwd()
    resolved, missing = _resolve_all(mixture, base, allow_missing)
    out_dir = out.resolve().parent
    mixed: list[dict[str, Any]] = []
    report = []
    for entry, path in resolved:
        n_rows, rows = _entry_rows(entry, path, out_dir)
        mixed += rows
        report.append(
            {
                "name": entry.name,
                "file": str(path),
                "rows": n_rows,
                "repeat": entry.repeat,
                "total": len(rows),
            }
        )
    if not mixed:
        raise InputError("the mixture produced no rows", mixture.file)
    if mixture.shuffle if shuffle is None else shuffle:
        random.Random(seed).shuffle(mixed)
    write_rows(out, mixed)
    return {"output": str(out), "rows": len(mixed), "datasets": report, "missing": missing}


def _resolve_all(
    mixture: Mixture, base: Path, allow_missing: bool
) -> tuple[list[tuple[MixEntry, Path]], list[str]]:
    """The JSON file of each used entry, and the names of the missing ones (``allow_missing``).

    Raises:
        InputError: A missing dataset without ``allow_missing``.
    """
    resolved: list[tuple[MixEntry, Path]] = []
    missing: list[str] = []
    for entry in mixture.entries:
        if entry.repeat == 0:
            continue
        try:
            path = _resolve(entry, base)
        except InputError:
            if not allow_missing:
                raise
            missing.append(entry.name)
            continue
        if not path.is_file():
            if not allow_missing:
                raise InputError(
                    f"dataset {entry.name!r} not found (build it with `m3 data build`, "
                    "pass --root, or --allow-missing)",
                    path,
                )
            missing.append(entry.name)
            continue
        resolved.append((entry, path))
    return resolved, missing


def _entry_rows(entry: MixEntry, path: Path, out_dir: Path) -> tuple[int, list[dict[str, Any]]]:
    """How many rows an entry's file has, and the rows it adds to the mixture.

    Each row appears ``repeat`` times, renamed ``NAME/ID[#rK]``, its images
    relocated to be relative to ``out_dir``.
    """
    from medm3.data.llava import read_rows, row_images

    folder = path.resolve().parent
    rows = read_rows(path)
    out: list[dict[str, Any]] = []
    for row in rows:
        moved = _relocate(row, folder, out_dir, row_images(row))
        moved["mixture"] = entry.name
        for k in range(entry.repeat):
            copy = dict(moved)
            suffix = f"#r{k}" if k else ""
            copy["id"] = f"{entry.name}/{row['id']}{suffix}"
            out.append(copy)
    return len(rows), out


def _relocate(
    row: dict[str, Any], folder: Path, out_dir: Path, images: list[str]
) -> dict[str, Any]:
    """A copy of ``row`` with image paths relative to ``out_dir`` instead of ``folder``."""
    if not images:
        return dict(row)
    moved = [_rel(folder, p, out_dir) for p in images]
    copy = dict(row)
    if "images" in copy:
        copy["images"] = moved
    elif isinstance(copy.get("image"), list):
        copy["image"] = moved
    else:
        copy["image"] = moved[0]
    return copy


def _rel(folder: Path, image: str, out_dir: Path) -> str:
    path = Path(image)
    if path.is_absolute():
        return image
    return Path(os.path.relpath(folder / path, out_dir)).as_posix()
