"""WADO-RS retrieval into a local cache keyed by SOP Instance UID, and the image loader.

Instances are cached as ``<cache>/dicomweb/<SeriesInstanceUID>/<SOPInstanceUID>.dcm``
(``<cache>`` is ``$MEDM3_CACHE`` or ``~/.cache/medm3``; folders are created
readable by the owner only, since they hold patient data). An instance
already in the cache is never downloaded again.

A retrieval is all or nothing: missing instances are downloaded into a
staging folder beside the cache and moved in (one ``os.replace`` per file)
only after every one of them arrived and was checked (parseable DICOM whose
SOP Instance UID and series are the requested ones). A failure at any point
removes the staging folder, so the cache never holds a partial series or a
partial file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from medm3.dicomweb.client import connect, server_call
from medm3.dicomweb.query import SeriesPlan, choose_series, text
from medm3.dicomweb.url import parse_reference
from medm3.errors import InputError
from medm3.imaging.sources import ImageSource


def cache_dir() -> Path:
    """The DICOMweb instance cache: ``<medm3 cache>/dicomweb``."""
    from medm3.utils.paths import cache_root

    return cache_root() / "dicomweb"


def instance_path(series_uid: str, sop_uid: str) -> Path:
    """Where the cache keeps one instance."""
    return cache_dir() / series_uid / f"{sop_uid}.dcm"


def _private_dir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)


def fetch_series(client: Any, plan: SeriesPlan, *, progress: bool | None = None) -> list[Path]:
    """Make every instance of ``plan`` present in the cache (all or nothing).

    Args:
        client: A connected client.
        plan: The chosen series (:func:`medm3.dicomweb.query.choose_series`).
        progress: Show a progress bar (default: when stderr is a terminal).

    Returns:
        The cached files of the series' instances, in search order.

    Raises:
        InputError: A request failed or the server sent something else than
            asked for; the cache is left as it was before the call.
    """
    import pydicom

    from medm3.utils.progress import progress_enabled

    series_uid = plan.series_uid
    wanted = [(text(ds, "SOPInstanceUID"), ds) for ds in plan.instances]
    paths = [instance_path(series_uid, sop) for sop, _ in wanted]
    missing = [(sop, p) for (sop, _), p in zip(wanted, paths, strict=True) if not p.is_file()]
    if not missing:
        return paths
    root = cache_dir()
    _private_dir(root)
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=root))
    show = progress_enabled() if progress is None else progress
    bar = None
    if show:
        from tqdm import tqdm

        bar = tqdm(total=len(missing), desc="retrieving", unit="instance", leave=False)
    try:
        staged = []
        for sop, final in missing:
            with server_call(client.base_url, f"retrieving instance {sop}"):
                ds = client.retrieve_instance(plan.study_uid, series_uid, sop)
            got = str(ds.get("SOPInstanceUID", ""))
            if got != sop or str(ds.get("SeriesInstanceUID", "")) != series_uid:
                raise InputError(
                    f"asked for instance {sop} of series {series_uid} but the server sent "
                    f"{got or 'an object without SOPInstanceUID'}",
                    client.base_url,
                )
            tmp = staging / f"{sop}.dcm"
            pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
            staged.append((tmp, final))
            if bar is not None:
                bar.update(1)
        _private_dir(root / series_uid)
        for tmp, final in staged:
            os.replace(tmp, final)
    finally:
        if bar is not None:
            bar.close()
        shutil.rmtree(staging, ignore_errors=True)
    return paths


def load_reference(value: str | os.PathLike[str], ctx: Any) -> Any:
    """Read the image series a DICOMweb reference points to (the ``dicomweb`` image source).

    Args:
        value: ``dicomweb+https://HOST/ROOT/studies/UID[/series/UID]``.
        ctx: The :class:`~medm3.imaging.readers.base.ReadContext` (limits, series choice).

    Returns:
        The series as a :class:`~medm3.imaging.image.MedicalImage` read from
        the cached files (container ``files``, so DICOM-SEG export works), with
        ``metadata['dicomweb']`` = root, study, series and the reference.

    Raises:
        InputError: Any problem, as one line naming the reference.
    """
    from medm3.imaging.readers.dicom_series import read_dicom_files

    ref = parse_reference(value)
    client = connect(ref.root)
    plan = choose_series(client, ref, ctx.series, ctx.limits)
    paths = fetch_series(client, plan)
    reference = f"{ref.root}/studies/{plan.study_uid}/series/{plan.series_uid}"
    try:
        image = read_dicom_files(paths, replace(ctx, series=None))
    except InputError as exc:
        raise InputError(exc.message, "dicomweb+" + reference) from None
    image.metadata["dicomweb"] = {
        "root": ref.root,
        "study_uid": plan.study_uid,
        "series_uid": plan.series_uid,
        "reference": "dicomweb+" + reference,
    }
    return image


#: The ``dicomweb`` image source: ``load_image("dicomweb+https://...")`` comes here
#: (registered in :data:`medm3.imaging.sources.SOURCES`).
SOURCE = ImageSource(name="dicomweb", load=load_reference)
