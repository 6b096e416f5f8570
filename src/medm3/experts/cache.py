"""Expert result cache: the same image, expert, arguments and weights -> the same result.

Key: :func:`cache_key` hashes (blake2b) a JSON document holding the cache
format version, the expert name, the normalised argument string, the
expert's :meth:`~medm3.experts.base.Expert.weights_id`, the content hash of
every named input (:func:`hash_image`: array bytes in C order + dtype + shape
+ spacing + affine + modality; the path and metadata are not part of it) and
the expert's :meth:`~medm3.experts.base.Expert.cache_context` (by default the
overlay plane/slice and ``RunContext.options``).

Two tiers:

* memory: a thread-safe LRU of at most ``MEDM3_RESULT_CACHE_ITEMS`` results
  (default 8; label maps can be large);
* disk: ``<cache_root>/results/<key>/`` holding ``result.json`` (the result's
  :meth:`~medm3.experts.base.ExpertResult.to_dict` plus the label-map
  geometry and overlay file names), ``label_map.npz`` (compressed) and
  ``overlay_<i>.png``. Entries are written into a temporary folder and
  renamed into place, so readers see complete entries or none; an entry that
  cannot be read is treated as a miss and removed.

Cached label-map arrays are shared with every caller that gets them: treat
them as read-only. There is no disk size limit: delete ``results/`` to reclaim
space.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medm3.experts import catalogue

if TYPE_CHECKING:  # pragma: no cover
    from medm3.experts.result import ExpertResult
    from medm3.imaging.image import MedicalImage

log = logging.getLogger(__name__)

#: Bumped whenever the key or the on-disk layout changes (old entries are ignored).
CACHE_FORMAT = 1
#: Default number of results kept in memory.
DEFAULT_MEMORY_ITEMS = 8
#: Info keys describing one lookup; never stored.
TRANSIENT_INFO_KEYS = ("cache", "cache_tier", "cache_key", "cached_timings")


def hash_image(image: MedicalImage) -> str:
    """Content hash of an image: array bytes, dtype, shape, spacing, affine, modality.

    Args:
        image: The image.

    Returns:
        32 hex characters (blake2b, 16-byte digest).
    """
    array = np.ascontiguousarray(image.array)
    h = hashlib.blake2b(digest_size=16)
    header = {
        "dtype": array.dtype.str,
        "shape": list(array.shape),
        "spacing": [float(s) for s in image.spacing],
        "modality": image.modality,
    }
    h.update(json.dumps(header, sort_keys=True).encode())
    h.update(np.ascontiguousarray(image.affine, dtype=np.float64).tobytes())
    h.update(array.data if array.size else b"")
    return h.hexdigest()


def cache_key(
    expert: str,
    args: str,
    weights_id: str,
    input_hashes: Mapping[str, str],
    context: Mapping[str, Any] | None = None,
) -> str:
    """The cache key of one expert call.

    Args:
        expert: Registry name of the expert.
        args: Normalised argument string.
        weights_id: :meth:`~medm3.experts.base.Expert.weights_id` of the instance.
        input_hashes: Input name -> :func:`hash_image`.
        context: JSON-serialisable context facts that change the result.

    Returns:
        32 hex characters.
    """
    doc = {
        "format": CACHE_FORMAT,
        "expert": expert,
        "args": args,
        "weights": weights_id,
        "inputs": dict(sorted(input_hashes.items())),
        "context": context or {},
    }
    text = json.dumps(doc, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def copy_result(result: ExpertResult) -> ExpertResult:
    """A copy whose dicts/lists can be changed freely (arrays and images are shared)."""
    return replace(
        result,
        overlays=list(result.overlays),
        label_names=dict(result.label_names),
        probabilities=dict(result.probabilities),
        findings=dict(result.findings),
        measurements=[dict(m) for m in result.measurements],
        timings=dict(result.timings),
        info=dict(result.info),
    )


class ResultCache:
    """Memory LRU + disk store of expert results.

    Args:
        root: Folder of the disk tier (default ``<cache_root>/results``);
            ``None`` with ``disk=False`` keeps results in memory only.
        max_items: Results kept in memory (default ``MEDM3_RESULT_CACHE_ITEMS``
            or 8); 0 disables the memory tier.
        disk: Whether to use the disk tier.
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        max_items: int | None = None,
        disk: bool = True,
    ) -> None:
        self.root = Path(root) if root is not None else catalogue.cache_root() / "results"
        if max_items is None:
            try:
                max_items = int(os.environ.get("MEDM3_RESULT_CACHE_ITEMS", DEFAULT_MEMORY_ITEMS))
            except ValueError:
                max_items = DEFAULT_MEMORY_ITEMS
        self.max_items = max(0, max_items)
        self.disk = disk
        self._memory: OrderedDict[str, ExpertResult] = OrderedDict()
        self._lock = threading.Lock()

    # ------------------------------------------------------------- lookups
    def get(self, key: str) -> tuple[ExpertResult, str] | None:
        """Find a result.

        Args:
            key: A :func:`cache_key`.

        Returns:
            ``(copy of the result, "memory" | "disk")`` or None on a miss.
        """
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                return copy_result(self._memory[key]), "memory"
        if not self.disk:
            return None
        result = self._read(key)
        if result is None:
            return None
        self._remember(key, result)
        return copy_result(result), "disk"

    def put(self, key: str, result: ExpertResult, *, disk: bool = True) -> None:
        """Store a result (without its per-lookup ``info`` keys).

        Args:
            key: A :func:`cache_key`.
            result: The result; a copy is stored, so later changes to it do not leak in.
            disk: Also write it to the disk tier (when enabled).
        """
        stored = copy_result(result)
        for k in TRANSIENT_INFO_KEYS:
            stored.info.pop(k, None)
        self._remember(key, stored)
        if disk and self.disk:
            self._write(key, stored)

    def clear(self) -> None:
        """Drop every entry, in memory and on disk."""
        with self._lock:
            self._memory.clear()
        if self.disk:
            shutil.rmtree(self.root, ignore_errors=True)

    def __len__(self) -> int:
        with self._lock:
            return len(self._memory)

    def _remember(self, key: str, result: ExpertResult) -> None:
        if not self.max_items:
            return
        with self._lock:
            self._memory[key] = result
            self._memory.move_to_end(key)
            while len(self._memory) > self.max_items:
                self._memory.popitem(last=False)

    # ---------------------------------------------------------------- disk
    def entry_dir(self, key: str) -> Path:
        """Folder of the disk entry ``key``."""
        return self.root / key

    def _write(self, key: str, result: ExpertResult) -> None:
        final = self.entry_dir(key)
        if final.is_dir():
            return
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=self.root))
        except OSError:
            return  # a read-only cache must never break a run
        try:
            doc = result.to_dict()
            doc["cache_format"] = CACHE_FORMAT
            doc["key"] = key
            for i, (overlay, entry) in enumerate(
                zip(result.overlays, doc["overlays"], strict=True)
            ):
                entry["file"] = f"overlay_{i}.png"
                entry["render_info"] = overlay.image.info.get("medm3")
                overlay.image.save(tmp / entry["file"], format="PNG")
            if result.label_map is not None:
                lm = result.label_map
                np.savez_compressed(
                    tmp / "label_map.npz",
                    array=np.asarray(lm.array),
                    affine=np.asarray(lm.affine, dtype=np.float64),
                    spacing=np.asarray(lm.spacing, dtype=np.float64),
                )
                doc["label_map"] = {
                    "file": "label_map.npz",
                    "modality": lm.modality,
                    "modality_source": lm.modality_source,
                    "source": lm.source,
                }
            from medm3.experts.output import json_default

            (tmp / "result.json").write_text(json.dumps(doc, default=json_default))
            os.rename(tmp, final)
        except Exception:  # caching is best effort, but a failure must be visible
            log.warning(
                "could not store the expert result in the cache at %s", final, exc_info=True
            )
            shutil.rmtree(tmp, ignore_errors=True)

    def _read(self, key: str) -> ExpertResult | None:
        folder = self.entry_dir(key)
        if not (folder / "result.json").is_file():
            return None
        try:
            return _load_entry(folder, key)
        except _DAMAGE as exc:  # a damaged or stale entry is a miss, and is replaced
            log.warning("ignoring the damaged cache entry %s: %s", folder, exc)
            shutil.rmtree(folder, ignore_errors=True)
            return None
        except Exception:  # a bug in the reader: say so loudly, keep the entry, run uncached
            log.error("reading the cache entry %s failed unexpectedly", folder, exc_info=True)
            return None


#: What a damaged, truncated or foreign entry raises while it is read.
_DAMAGE = (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile)


def _load_entry(folder: Path, key: str) -> ExpertResult:
    from PIL import Image

    from medm3.experts.result import ExpertResult, Overlay
    from medm3.imaging.image import MedicalImage

    doc = json.loads((folder / "result.json").read_text())
    if doc.get("cache_format") != CACHE_FORMAT or doc.get("key") != key:
        raise ValueError("stale or foreign cache entry")
    overlays = []
    for entry in doc["overlays"]:
        with Image.open(folder / entry["file"]) as im:
            image = im.convert("RGB")
        if entry.get("render_info") is not None:
            image.info["medm3"] = entry["render_info"]
        overlays.append(
            Overlay(
                name=entry["name"],
                image=image,
                plane=entry.get("plane"),
                slice_index=entry.get("slice_index"),
                caption=entry.get("caption", ""),
            )
        )
    label_map = None
    if doc.get("label_map"):
        meta = doc["label_map"]
        with np.load(folder / meta["file"], allow_pickle=False) as npz:
            array, affine, spacing = npz["array"], npz["affine"], npz["spacing"]
        label_map = MedicalImage(
            array=array,
            spacing=tuple(float(s) for s in spacing),
            affine=affine,
            modality=meta["modality"],
            modality_source=meta["modality_source"],
            source=meta["source"],
        )
    return ExpertResult(
        expert=doc["expert"],
        args=doc["args"],
        text=doc["text"],
        overlays=overlays,
        label_map=label_map,
        label_names={int(k): v for k, v in doc["label_names"].items()},
        probabilities={k: float(v) for k, v in doc["probabilities"].items()},
        findings={k: bool(v) for k, v in doc["findings"].items()},
        measurements=list(doc["measurements"]),
        timings={k: float(v) for k, v in doc["timings"].items()},
        info=dict(doc["info"]),
    )


_default: ResultCache | None = None
_default_lock = threading.Lock()


def default_cache() -> ResultCache:
    """The process-wide cache under the current :func:`~medm3.experts.catalogue.cache_root`.

    A new instance is made when ``MEDM3_CACHE`` changed since the last call.
    """
    global _default
    root = catalogue.cache_root() / "results"
    with _default_lock:
        if _default is None or _default.root != root:
            _default = ResultCache(root)
        return _default


def cache_disabled() -> bool:
    """True when ``MEDM3_NO_RESULT_CACHE`` is set to a true value."""
    value = os.environ.get("MEDM3_NO_RESULT_CACHE", "").strip().lower()
    return value in ("1", "true", "yes", "on")
