"""The data-builder protocol: how one public dataset becomes LLaVA-style training rows.

A builder reads a dataset in its official distribution format and yields
:class:`Item` objects (one per source unit: an annotation row, a report, a CT
volume ...) in a fixed order, each with a stable id and its split. The build
engine (:mod:`medm3.data.engine`) then calls :meth:`Builder.convert` on each
item with an :class:`ItemContext` (a random generator seeded from the build
seed and the item id, and writers for image files) and collects the returned
rows. Because every item is converted independently and deterministically, a
killed build can restart at any shard and still produce byte-identical output.

Problems with one item are raised as :class:`BadRow` (malformed source row:
counted against ``--max-bad-fraction``) or :class:`SkipRow` (well-formed but
not usable, e.g. its image is missing: counted, listed, not an error).
"""

from __future__ import annotations

import hashlib
import random
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from medm3.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from medm3.imaging.limits import ReadLimits

#: How source images are placed in the output (``--image-mode``).
IMAGE_MODES: tuple[str, ...] = ("copy", "hardlink", "symlink")
#: Option kinds a builder may declare (see :class:`BuilderOption`).
OPTION_KINDS: tuple[str, ...] = ("flag", "str", "int", "float", "path", "choice")


class BadRow(Exception):
    """A malformed source row: reported by id, counted against the bad-row threshold.

    Args:
        reason: What is wrong, one short phrase.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SkipRow(Exception):
    """A well-formed source row that cannot be used (e.g. its image is missing).

    Args:
        reason: Why it is skipped, one short phrase.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class BuilderOption:
    """A builder-specific option (shown by ``m3 data build NAME --help``).

    Attributes:
        name: CLI spelling without dashes (``allow-missing-images``).
        kind: One of :data:`OPTION_KINDS`.
        default: Value when not given.
        help: One-line description.
        choices: Allowed values for ``choice`` options.
    """

    name: str
    kind: str
    default: Any = None
    help: str = ""
    choices: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """The Python name (``allow_missing_images``)."""
        return self.name.replace("-", "_")

    def convert(self, value: Any) -> Any:
        """Check and convert a given value.

        Raises:
            InputError: The value does not fit the option.
        """
        if value is None:
            return self.default
        try:
            if self.kind == "flag":
                if isinstance(value, str):
                    return value.strip().lower() in ("1", "true", "yes", "on")
                return bool(value)
            if self.kind == "int":
                return int(value)
            if self.kind == "float":
                return float(value)
            if self.kind == "choice":
                text = str(value).strip().lower()
                if text not in self.choices:
                    raise ValueError(f"choose one of {', '.join(self.choices)}")
                return text
            return str(value)
        except (TypeError, ValueError) as exc:
            raise InputError(f"bad value {value!r} for --{self.name}: {exc}") from None


@dataclass(frozen=True)
class Item:
    """One unit of source data, converted independently of all others.

    Attributes:
        id: Stable, unique id (used for row ids, error reports and the item's RNG).
        split: Output split (``train``, ``val``, ``test``).
        data: Builder-specific payload (kept small: paths and parsed fields).
    """

    id: str
    split: str
    data: Any = None


@dataclass
class ItemContext:
    """What :meth:`Builder.convert` may use while converting one item.

    Attributes:
        out: The (staging) output folder; image paths in rows are relative to it.
        rng: Random generator seeded from the build seed, the builder and the item id.
        seed: The build seed.
        image_mode: How :meth:`link_or_copy` places source images: ``copy``,
            ``hardlink`` (falls back to a copy across file systems) or ``symlink``.
        written: Relative paths of the files written for this item.
        source_root: The dataset folder; a source image that is a link to a file
            outside it is a bad row (None: not checked).
        limits: Decoding limits for source images (None: from the environment).
    """

    out: Path
    rng: random.Random
    seed: int
    image_mode: str = "copy"
    written: list[str] = field(default_factory=list)
    source_root: Path | None = None
    limits: ReadLimits | None = None

    def _target(self, relative: str) -> Path:
        rel = Path(relative)
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"output paths must stay inside the output folder: {relative}")
        return self.out / rel

    def write_bytes(self, relative: str, data: bytes) -> str:
        """Write a file under the output folder (atomically) and return its relative path."""
        from medm3.utils.atomic import atomic_write_bytes

        atomic_write_bytes(self._target(relative), data)
        self.written.append(relative)
        return relative

    def copy_file(self, source: Path, relative: str) -> str:
        """Copy a source file under the output folder (atomically); return its relative path."""
        from medm3.utils.atomic import atomic_path

        with atomic_path(self._target(relative)) as tmp:
            shutil.copyfile(source, tmp)
        self.written.append(relative)
        return relative

    def link_or_copy(self, source: Path, relative: str) -> str:
        """Place a source image under the output folder as :attr:`image_mode` says.

        The image is checked first (:func:`check_source_image`): a link leading
        outside the dataset folder, or a file that does not decode as an image
        within the limits, is a :class:`BadRow`.
        """
        import os

        check_source_image(Path(source), self.source_root, self.limits)
        if self.image_mode == "copy":
            return self.copy_file(source, relative)
        target = self._target(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.link")
        tmp.unlink(missing_ok=True)
        try:
            if self.image_mode == "symlink":
                os.symlink(Path(source).resolve(), tmp)
            else:
                os.link(source, tmp)
        except OSError:
            return self.copy_file(source, relative)
        os.replace(tmp, target)
        self.written.append(relative)
        return relative

    def save_png(self, relative: str, image: Image.Image) -> str:
        """Save a PIL image as PNG (no metadata, so the bytes are reproducible)."""
        from medm3.utils.atomic import atomic_path

        with atomic_path(self._target(relative)) as tmp:
            image.save(tmp, format="PNG")
        self.written.append(relative)
        return relative


#: Suffixes of raster images that :func:`check_source_image` decodes.
RASTER_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def check_source_image(path: Path, root: Path | None, limits: ReadLimits | None = None) -> None:
    """Refuse a source image that escapes the dataset or does not decode.

    * An image file that is a symbolic link resolving outside ``root`` (and
      outside its own folder) is refused: a dataset must not smuggle in
      ``/etc/passwd`` or another user's files. Linked *folders* (a dataset's
      image folder moved to another disk) are left alone.
    * Raster images (PNG/JPEG/BMP/TIFF) are opened and decoded (JPEG at
      1/8 scale, which still reads the whole compressed stream); the declared
      size is checked against ``limits`` before decoding.

    Args:
        path: The source image.
        root: The dataset folder (None: no containment check).
        limits: Decoding limits (None: from the environment).

    Raises:
        BadRow: The image is a link outside ``root``, too large, truncated or corrupt.
        SkipRow: The image does not exist.
    """
    if path.is_symlink():
        real = path.resolve()
        allowed = [path.parent.resolve()] + ([root.resolve()] if root is not None else [])
        if not any(real.is_relative_to(base) for base in allowed):
            raise BadRow(f"image {path.name} is a link to a file outside the source folder")
    if not path.is_file():
        raise SkipRow("image file missing")
    if path.suffix.lower() in RASTER_SUFFIXES:
        _decode_raster(path, limits)


def _decode_raster(path: Path, limits: ReadLimits | None) -> None:
    import warnings

    from PIL import Image

    from medm3.imaging.limits import check_pixels, resolve_limits

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                width, height = im.size
                bands = len(im.getbands())
                check_pixels(
                    width * height * bands, resolve_limits(limits), path, f"{width} x {height}"
                )
                if im.format == "JPEG":
                    im.draft(im.mode, (max(1, width // 8), max(1, height // 8)))
                im.load()
    except InputError as exc:
        raise BadRow(f"image {path.name}: {exc.message}") from None
    except Exception as exc:  # PIL raises many types for corrupt data
        raise BadRow(f"image {path.name} is corrupt or truncated ({exc})") from None


def item_rng(seed: int, builder: str, item_id: str) -> random.Random:
    """The random generator of one item: same seed and id -> same draws, in any run order."""
    return random.Random(f"{seed}/{builder}/{item_id}")


def hash_split(key: str, fractions: Sequence[tuple[str, float]]) -> str:
    """Assign a key to a split by a stable hash (independent of order and seed).

    Args:
        key: Stable id of the unit being split (a study, a report, a volume).
        fractions: ``(split, fraction)`` pairs; the last split takes the rest.

    Returns:
        The split name.
    """
    value = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64
    edge = 0.0
    for name, fraction in fractions[:-1]:
        edge += fraction
        if value < edge:
            return name
    return fractions[-1][0]


class Builder(ABC):
    """Base class of the dataset builders.

    Subclasses set the class attributes, document the expected source layout
    in their class docstring (shown by ``m3 data build NAME --help``) and
    implement :meth:`check_source`, :meth:`items` and :meth:`convert`.

    Args:
        source: The dataset as downloaded by the user (a folder or a file).
        options: Builder-specific option values by key (defaults filled in).
        seed: Seed of every random choice (question templates, sampling).
    """

    #: Registry name (``vqa-rad``).
    name: ClassVar[str]
    #: Version of the conversion; bump it when the produced rows change.
    version: ClassVar[str] = "1"
    #: One line for ``m3 data list``.
    summary: ClassVar[str]
    #: Builder-specific options.
    options: ClassVar[tuple[BuilderOption, ...]] = ()
    #: Items per shard (the unit of resumption).
    shard_size: ClassVar[int] = 500
    #: Output splits in the order they are listed.
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")

    def __init__(
        self, source: str | Path, options: Mapping[str, Any] | None = None, *, seed: int = 0
    ) -> None:
        self.source = Path(source)
        self.seed = int(seed)
        self.opts = self.resolve_options(options or {})

    @classmethod
    def resolve_options(cls, given: Mapping[str, Any]) -> dict[str, Any]:
        """Fill defaults and convert values; unknown keys are an error.

        Raises:
            InputError: Unknown option or a bad value.
        """
        known = {o.key: o for o in cls.options}
        unknown = sorted(k for k in given if k.replace("-", "_") not in known)
        if unknown:
            raise InputError(
                f"builder {cls.name} has no option {', '.join(unknown)}; "
                f"its options are: {', '.join(o.name for o in cls.options) or 'none'}"
            )
        values = {k.replace("-", "_"): v for k, v in given.items()}
        return {key: opt.convert(values.get(key)) for key, opt in known.items()}

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """Name, version, summary, options and layout text (``m3 data list --json``)."""
        return {
            "name": cls.name,
            "version": cls.version,
            "summary": cls.summary,
            "splits": list(cls.splits),
            "options": [
                {"name": o.name, "kind": o.kind, "default": o.default, "help": o.help}
                for o in cls.options
            ],
            "layout": (cls.__doc__ or "").strip(),
        }

    # ------------------------------------------------------------ protocol
    @abstractmethod
    def check_source(self) -> None:
        """Check the source layout before anything is written.

        Raises:
            InputError: Missing files or a wrong layout (one line, naming what is expected).
        """

    def annotation_files(self) -> list[Path]:
        """Source annotation files whose sha256 goes into the manifest (default: none)."""
        return []

    @abstractmethod
    def items(self) -> Iterable[Item]:
        """The source units, in a fixed order, each with a unique id and its split."""

    def prepare(self, items: Sequence[Item]) -> None:  # noqa: B027 - optional hook
        """Optional hook called with each shard's items before they are converted.

        Builders use it to batch expensive work (e.g. CXR expert inference). It
        must not raise for a single bad item; record the problem and raise
        :class:`BadRow` from :meth:`convert` instead.
        """

    @abstractmethod
    def convert(self, item: Item, ctx: ItemContext) -> list[dict[str, Any]]:
        """Turn one item into rows (see :func:`medm3.data.llava.make_row`).

        Raises:
            BadRow: The source row is malformed.
            SkipRow: The row cannot be used (missing image ...).
        """


# ------------------------------------------------------------------ helpers
