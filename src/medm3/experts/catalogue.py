"""Weights catalogue and cache: where each expert's weights come from and live.

Cache root: ``$MEDM3_CACHE`` or ``~/.cache/medm3``. MONAI bundles are kept in
``<cache>/bundles/<bundle name>/`` (the bundle's own layout: ``configs/``,
``models/model.pt``); TorchXRayVision checkpoints in
``<cache>/torchxrayvision/`` under the file names torchxrayvision itself uses,
so its normal ``weights=`` loading path finds them; checkpoints already in
torchxrayvision's own cache (``~/.torchxrayvision/models_data/``) are used
too. Downloads honour
``HF_HOME``/``HF_HUB_OFFLINE`` (Hugging Face sources) and are skipped entirely
when ``HF_HUB_OFFLINE=1`` or ``MEDM3_OFFLINE=1``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medm3.errors import MedM3Error
from medm3.utils.paths import cache_root


class WeightsNotFoundError(MedM3Error):
    """Weights are not in the cache (or the download failed); says how to get them."""

    exit_code = 3


@dataclass(frozen=True)
class WeightsSpec:
    """One catalogue entry.

    Attributes:
        name: Catalogue name (``vista3d``, ``brats``, ``cxr``).
        source: ``monai_bundle`` or ``torchxrayvision``.
        description: What the weights are.
        bundle: MONAI bundle name (``monai_bundle`` sources).
        version: Bundle version to download (``None``: latest).
        hf_repo: Hugging Face repository mirroring the weights, if any.
        files: Files that must exist, relative to the weights folder.
        sha256: Known checksums of some of ``files`` (verified when present).
        models: TorchXRayVision weight names (``torchxrayvision`` sources).
        license: Licence of the weights.
        facts: Preprocessing / inference facts (spacing, roi, thresholds ...).
    """

    name: str
    source: str
    description: str
    bundle: str | None = None
    version: str | None = None
    hf_repo: str | None = None
    files: tuple[str, ...] = ()
    sha256: dict[str, str] = field(default_factory=dict)
    models: tuple[str, ...] = ()
    license: str = ""
    facts: dict[str, Any] = field(default_factory=dict)


CXR_MODELS: tuple[str, ...] = (
    "densenet121-res224-all",
    "densenet121-res224-chex",
    "densenet121-res224-mimic_ch",
    "densenet121-res224-mimic_nb",
    "densenet121-res224-nih",
    "densenet121-res224-pc",
    "densenet121-res224-rsna",
    "resnet50-res512-all",
)

CATALOGUE: dict[str, WeightsSpec] = {
    "vista3d": WeightsSpec(
        name="vista3d",
        source="monai_bundle",
        description="VISTA3D (vista3d132) CT segmentation, 127 structures, MONAI model zoo",
        bundle="vista3d",
        hf_repo="MONAI/VISTA3D-HF",
        files=("models/model.pt",),
        license="NVIDIA OneWay Noncommercial License (see the bundle's LICENSE)",
        facts={
            "network": "monai.networks.nets.vista3d132(in_channels=1)",
            "spacing_mm": [1.5, 1.5, 1.5],
            "intensity_range_hu": [-963.8247715525971, 1053.678477684517],
            "roi_size": [128, 128, 128],
            "overlap": 0.3,
            "sw_batch_size": 1,
        },
    ),
    "brats": WeightsSpec(
        name="brats",
        source="monai_bundle",
        description="BraTS 2018 brain tumour SegResNet (TC/WT/ET), MONAI model zoo",
        bundle="brats_mri_segmentation",
        files=("models/model.pt",),
        license="Apache-2.0 (MONAI model zoo)",
        facts={
            "network": "SegResNet(blocks_down=[1,2,2,4], blocks_up=[1,1,1], init_filters=16, "
            "in_channels=4, out_channels=3, dropout_prob=0.2)",
            "channel_order": ["t1ce", "t1", "t2", "flair"],
            "roi_size": [240, 240, 160],
            "overlap": 0.5,
            "threshold": 0.5,
        },
    ),
    "cxr": WeightsSpec(
        name="cxr",
        source="torchxrayvision",
        description="TorchXRayVision ensemble: 7 DenseNet-121 (224 px) + ResNet-50 (512 px)",
        models=CXR_MODELS,
        license="Apache-2.0 (torchxrayvision)",
        facts={
            "labels": 18,
            "normalisation": "xrv.datasets.normalize(img, maxval) -> [-1024, 1024]",
        },
    ),
}


def offline() -> bool:
    """True when downloads must not be attempted (``HF_HUB_OFFLINE``/``MEDM3_OFFLINE``)."""
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "MEDM3_OFFLINE")
    )


def get_spec(name: str) -> WeightsSpec:
    """The catalogue entry ``name``.

    Raises:
        MedM3Error: Unknown name.
    """
    try:
        return CATALOGUE[name]
    except KeyError:
        raise MedM3Error(
            f"no weights named {name!r} in the catalogue; known: {', '.join(CATALOGUE)}"
        ) from None


def weights_dir(name: str) -> Path:
    """Default folder of the weights ``name`` inside the cache."""
    spec = get_spec(name)
    if spec.source == "monai_bundle":
        return cache_root() / "bundles" / str(spec.bundle)
    return cache_root() / spec.source


#: File names torchxrayvision gives each checkpoint (the basename of its release URL);
#: it finds a checkpoint in ``cache_dir`` by this name. Kept here so checking the cache
#: needs no torch import; a test compares them with torchxrayvision's own table.
XRV_FILENAMES: dict[str, str] = {
    "densenet121-res224-all": "nih-pc-chex-mimic_ch-google-openi-kaggle-densenet121-d121-tw-"
    "lr001-rot45-tr15-sc15-seed0-best.pt",
    "densenet121-res224-chex": "chex-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt",
    "densenet121-res224-mimic_ch": "mimic_ch-densenet121-d121-tw-lr001-rot45-tr15-sc15-"
    "seed0-best.pt",
    "densenet121-res224-mimic_nb": "mimic_nb-densenet121-d121-tw-lr001-rot45-tr15-sc15-"
    "seed0-best.pt",
    "densenet121-res224-nih": "nih-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt",
    "densenet121-res224-pc": "pc-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt",
    "densenet121-res224-rsna": "kaggle-densenet121-d121-tw-lr001-rot45-tr15-sc15-seed0-best.pt",
    "resnet50-res512-all": "pc-nih-rsna-siim-vin-resnet50-test512-e400-state.pt",
}


def xrv_filename(model: str) -> str:
    """File name torchxrayvision uses for the weights ``model`` (its URL's basename)."""
    if model in XRV_FILENAMES:
        return XRV_FILENAMES[model]
    from medm3.experts.xrv import import_xrv

    xrv = import_xrv()

    return os.path.basename(xrv.models.model_urls[model]["weights_url"])


def required_files(spec: WeightsSpec) -> list[str]:
    """Files (relative to the weights folder) that must exist for ``spec``."""
    if spec.source == "torchxrayvision":
        return [xrv_filename(m) for m in spec.models]
    return list(spec.files)


def manual_command(spec: WeightsSpec, target: Path) -> str:
    """The shell command(s) a user can run by hand to fetch the weights (may be long)."""
    if spec.source == "monai_bundle":
        version = f" --version {spec.version}" if spec.version else ""
        return (
            f"python -m monai.bundle download --name {spec.bundle}{version} "
            f"--bundle_dir {target.parent}"
        )
    return "; ".join(f"wget {u} -P {target}" for u in weight_urls(spec).values())


def weight_urls(spec: WeightsSpec) -> dict[str, str]:
    """File name -> download URL of each torchxrayvision checkpoint (empty for bundles)."""
    if spec.source != "torchxrayvision":
        return {}
    from medm3.experts.xrv import import_xrv

    xrv = import_xrv()
    return {xrv_filename(m): xrv.models.model_urls[m]["weights_url"] for m in spec.models}


def manual_recipe(spec: WeightsSpec, target: Path) -> str:
    """A short (one sentence) way to get the weights by hand, for error messages."""
    if spec.source == "monai_bundle":
        return manual_command(spec, target)
    return (
        f"copy torchxrayvision's {len(spec.models)} checkpoint files into {target} "
        "(names and URLs: `m3 doctor -v`)"
    )


def xrv_home() -> Path:
    """torchxrayvision's own download folder (``~/.torchxrayvision/models_data``)."""
    return Path.home() / ".torchxrayvision" / "models_data"


def search_dirs(name: str) -> list[Path]:
    """Folders searched for the weights ``name``, in order (the medm3 cache first)."""
    dirs = [weights_dir(name)]
    if get_spec(name).source == "torchxrayvision":
        dirs.append(xrv_home())
    return dirs


def find_weights(name: str) -> Path | None:
    """The first of :func:`search_dirs` holding every required file, or ``None``."""
    return next((d for d in search_dirs(name) if not missing_files(name, d)), None)


def missing_files(name: str, folder: Path | None = None) -> list[str]:
    """Required files of ``name`` absent from ``folder`` (default: the cache)."""
    spec = get_spec(name)
    root = folder if folder is not None else weights_dir(name)
    return [f for f in required_files(spec) if not (root / f).is_file()]


def resolve_weights(name: str, override: str | os.PathLike[str] | None = None) -> Path:
    """The folder holding the weights ``name``, ready to load.

    Args:
        name: Catalogue name.
        override: A local folder in the same layout (a bundle folder, or a
            folder of TorchXRayVision files) to use instead of the cache.

    Returns:
        The weights folder: ``override``, else the first complete one of
        :func:`search_dirs` (the medm3 cache, then torchxrayvision's own cache).

    Raises:
        WeightsNotFoundError: Files are missing; one short line naming the
            folder, the ``m3 experts download`` command and a manual recipe.
    """
    spec = get_spec(name)
    if override is None:
        found = find_weights(name)
        if found is not None:
            verify_checksums(spec, found)
            return found
    folder = Path(override).expanduser() if override is not None else weights_dir(name)
    missing = missing_files(name, folder)
    if missing:
        total = len(required_files(spec))
        shown = missing[0] if len(missing[0]) <= 40 else missing[0][:37] + "..."
        what = f"missing {shown}" if total == 1 else f"missing {len(missing)} of {total} files"
        how = (
            f"Run `m3 experts download {name}`, or {manual_recipe(spec, folder)}"
            if override is None
            else "point --weights at a folder in the layout of the released weights"
        )
        raise WeightsNotFoundError(
            f"weights for expert '{name}' not found in {folder} ({what}). {how}"
        )
    verify_checksums(spec, folder)
    return folder


def verify_checksums(spec: WeightsSpec, folder: Path) -> None:
    """Check the known sha256 sums of ``spec`` (files without a known sum are skipped).

    Raises:
        WeightsNotFoundError: A file's checksum differs (corrupt or partial download).
    """
    for rel, expected in spec.sha256.items():
        path = folder / rel
        digest = file_sha256(path)
        if digest != expected:
            raise WeightsNotFoundError(
                f"checksum mismatch for {path}: expected {expected}, got {digest}; "
                f"delete it and run `m3 experts download {spec.name}` again"
            )


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file, memoised by (path, size, mtime) in a sidecar JSON."""
    stat = path.stat()
    sidecar = path.with_name(f".{path.name}.sha256.json")
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    try:
        cached = json.loads(sidecar.read_text())
        if {k: cached.get(k) for k in stamp} == stamp:
            return str(cached["sha256"])
    except (OSError, ValueError, KeyError):
        pass
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    digest = h.hexdigest()
    with contextlib.suppress(OSError):
        sidecar.write_text(json.dumps({**stamp, "sha256": digest}))
    return digest


def weights_version(name: str, folder: Path) -> str:
    """A string identifying the exact weights in ``folder`` (for result-cache keys).

    Uses the bundle's ``configs/metadata.json`` version when present plus the
    size and modification time of every required file.
    """
    spec = get_spec(name)
    parts = [name]
    meta = folder / "configs" / "metadata.json"
    if meta.is_file():
        try:
            parts.append(str(json.loads(meta.read_text()).get("version", "")))
        except ValueError:
            parts.append("bad-metadata")
    for rel in required_files(spec):
        st = (folder / rel).stat()
        parts.append(f"{rel}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
