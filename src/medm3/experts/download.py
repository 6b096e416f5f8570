"""Downloading expert weights into the cache (``m3 experts download``).

MONAI bundles are fetched with :func:`monai.bundle.download` into
``<cache>/bundles/<bundle>/`` from MONAI's default source, or the one named by
``MEDM3_BUNDLE_SOURCE`` (``monaihosting``, ``github``, ``ngc``,
``huggingface_hub``; ``MEDM3_BUNDLE_REPO`` gives the repository where the
source needs one, default ``MONAI/<bundle>`` for ``huggingface_hub``).
TorchXRayVision checkpoints are fetched with torchxrayvision's own
``get_weights(name, cache_dir=...)`` into ``<cache>/torchxrayvision/``.

Downloads go to a temporary folder beside the destination and are moved into
place only when complete, so a failure never leaves partial files (nor the
empty folders torchxrayvision creates when offline). Every failure, and any
attempt while offline (``HF_HUB_OFFLINE``/``MEDM3_OFFLINE``), raises
:class:`~medm3.experts.catalogue.WeightsNotFoundError` naming what failed, the
target folder and the command to fetch the weights by hand.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from medm3.experts import catalogue
from medm3.experts.catalogue import WeightsNotFoundError, WeightsSpec


def weights_present(name: str, *, exact: bool = True) -> bool:
    """Whether the weights ``name`` are in the cache.

    Args:
        name: Catalogue name.
        exact: Check every required file. ``False`` avoids importing
            torchxrayvision (and torch) for ``torchxrayvision`` entries by
            counting checkpoint files instead (used by ``m3 experts list``).
    """
    spec = catalogue.get_spec(name)
    if exact or spec.source != "torchxrayvision" or spec.files:
        return catalogue.find_weights(name) is not None
    for folder in catalogue.search_dirs(name):
        if folder.is_dir():
            found = [p for p in folder.iterdir() if p.suffix in (".pt", ".pth") and p.is_file()]
            if len(found) >= len(spec.models):
                return True
    return False


def download_weights(name: str, *, force: bool = False, progress: bool = True) -> Path:
    """Download the weights ``name`` into the cache (no-op when present).

    Args:
        name: Catalogue name (``vista3d``, ``brats``, ``cxr``).
        force: Download again even when the files are present.
        progress: Show progress bars (on stderr).

    Returns:
        The weights folder (:func:`~medm3.experts.catalogue.weights_dir`).

    Raises:
        WeightsNotFoundError: Offline, or the download failed / was incomplete.
        MedM3Error: Unknown catalogue name.
    """
    spec = catalogue.get_spec(name)
    target = catalogue.weights_dir(name)
    if not force:
        found = catalogue.find_weights(name)  # the cache, or torchxrayvision's own
        if found is not None:
            return found
    if catalogue.offline():
        raise WeightsNotFoundError(
            _failure(
                spec, target, "downloads are disabled (HF_HUB_OFFLINE or MEDM3_OFFLINE is set)"
            )
        )
    try:
        if spec.source == "monai_bundle":
            _download_bundle(spec, target, force=force, progress=progress)
        elif spec.source == "torchxrayvision":
            _download_xrv(spec, target, force=force, progress=progress)
        else:
            raise WeightsNotFoundError(
                _failure(spec, target, f"unknown weights source {spec.source!r}")
            )
    except WeightsNotFoundError:
        raise
    except Exception as exc:  # network, HTTP, disk ... : one clear message
        raise WeightsNotFoundError(_failure(spec, target, short_reason(exc))) from exc
    missing = catalogue.missing_files(name, target)
    if missing:
        raise WeightsNotFoundError(
            _failure(spec, target, f"the download did not provide {', '.join(missing[:3])}")
        )
    catalogue.verify_checksums(spec, target)
    return target


def short_reason(exc: BaseException, limit: int = 80) -> str:
    """``Type: first line`` of an exception, cut at a word boundary (no third-party hints).

    Libraries append their own advice (torchxrayvision names the temporary
    download folder medm3 deletes); only the first sentence is kept.
    """
    first = (str(exc).strip().splitlines() or [""])[0]
    first = first.split(". ")[0].rstrip(".")
    text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    if len(text) > limit:
        text = text[: limit - 3].rsplit(" ", 1)[0] + "..."
    return text


def _failure(spec: WeightsSpec, target: Path, why: str) -> str:
    """One line: what failed, where the weights go, how to put them there by hand."""
    if spec.source == "monai_bundle":
        manual = catalogue.manual_command(spec, target)
    else:
        manual = (
            f"copy the {len(spec.models)} torchxrayvision checkpoint files there "
            "(names and URLs: `m3 doctor -v`)"
        )
    return (
        f"could not download the weights for '{spec.name}' into {target} ({why}). By hand: {manual}"
    )


@contextlib.contextmanager
def _staging(target: Path) -> Iterator[Path]:
    """A temporary folder beside ``target``; removed (with empty parents we made) afterwards."""
    made = [p for p in [target.parent, *target.parent.parents] if not p.exists()]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".download-{target.name}-", dir=target.parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for folder in made:  # innermost first
            with contextlib.suppress(OSError):
                folder.rmdir()  # only succeeds when empty


@contextlib.contextmanager
def _logs_to_stderr(prefix: str) -> Iterator[None]:
    """Point the stdout log handlers of the ``prefix*`` loggers at stderr for a while."""
    import logging

    swapped: list[tuple[logging.StreamHandler, object]] = []  # type: ignore[type-arg]
    for name in list(logging.root.manager.loggerDict):
        if not name.startswith(prefix):
            continue
        for handler in getattr(logging.getLogger(name), "handlers", []):
            if (
                isinstance(handler, logging.StreamHandler)
                and not isinstance(handler, logging.FileHandler)
                and handler.stream not in (sys.stderr, sys.__stderr__)
            ):
                swapped.append((handler, handler.setStream(sys.stderr)))
    try:
        yield
    finally:
        for handler, stream in swapped:
            handler.setStream(stream)


def _download_bundle(spec: WeightsSpec, target: Path, *, force: bool, progress: bool) -> None:
    from monai.bundle import download

    kwargs: dict[str, object] = {}
    source = os.environ.get("MEDM3_BUNDLE_SOURCE", "").strip()
    if source:
        kwargs["source"] = source
        repo = os.environ.get("MEDM3_BUNDLE_REPO", "").strip()
        if not repo and source == "huggingface_hub":
            repo = f"MONAI/{spec.bundle}"
        if repo:
            kwargs["repo"] = repo
    with _staging(target) as tmp, contextlib.redirect_stdout(sys.stderr), _logs_to_stderr("monai"):
        download(
            name=spec.bundle,
            version=spec.version,
            bundle_dir=tmp,
            progress=progress,
            **kwargs,  # type: ignore[arg-type]
        )
        fetched = tmp / str(spec.bundle)
        if not fetched.is_dir():
            raise WeightsNotFoundError(
                _failure(spec, target, f"the bundle archive has no {spec.bundle}/ folder")
            )
        missing = catalogue.missing_files(spec.name, fetched)
        if missing:
            raise WeightsNotFoundError(
                _failure(spec, target, f"the download did not provide {', '.join(missing[:3])}")
            )
        if target.exists():  # forced, or an incomplete earlier copy
            shutil.rmtree(target)
        os.replace(fetched, target)


def _download_xrv(spec: WeightsSpec, target: Path, *, force: bool, progress: bool) -> None:
    import torchxrayvision as xrv
    from tqdm import tqdm

    todo = [m for m in spec.models if force or not (target / catalogue.xrv_filename(m)).is_file()]
    with _staging(target) as tmp:
        bar = tqdm(
            todo, desc=f"{spec.name} weights", unit="file", file=sys.stderr, disable=not progress
        )
        # torchxrayvision prints its own hints (a wget into the temporary folder,
        # which is deleted): never shown; our bar and error message say what matters.
        fetched: dict[str, Path] = {}
        try:
            with open(os.devnull, "w") as sink:
                for model in bar:
                    bar.set_postfix_str(catalogue.xrv_filename(model)[:40])
                    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                        fetched[model] = Path(xrv.models.get_weights(model, cache_dir=str(tmp)))
        finally:
            bar.close()
        target.mkdir(parents=True, exist_ok=True)
        for model in todo:
            # Stored under the name torchxrayvision's `weights=` path looks for.
            os.replace(fetched[model], target / catalogue.xrv_filename(model))
