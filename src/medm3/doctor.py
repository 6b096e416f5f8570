"""Installation checks behind ``m3 doctor``.

Each check returns a :class:`Check`: a status (``ok``, ``warn``, ``missing``,
``info``), a one-line detail and optional details shown with ``--verbose``.
Nothing here downloads or writes outside a probe file in the folders checked.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["PACKAGES", "Check", "run_checks"]

#: Distribution name -> what medm3 uses it for.
PACKAGES: dict[str, str] = {
    "numpy": "core",
    "nibabel": "core: NIfTI",
    "pydicom": "core: DICOM",
    "SimpleITK": "core: NRRD / MetaImage",
    "torch": "experts, VLM",
    "monai": "experts: VISTA3D, BraTS",
    "torchxrayvision": "experts: CXR",
    "highdicom": "experts: DICOM-SEG output",
    "transformers": "VLM backends",
    "openai": "openai backend",
    "fastapi": "m3 serve",
    "pycocoevalcap": "m3 eval: report metrics",
    "peft": "m3 train: LoRA",
}

#: Environment variables that configure where medm3 looks and whether it goes online.
SETTINGS_VARS = (
    "MEDM3_CACHE",
    "MEDM3_OFFLINE",
    "HF_HUB_OFFLINE",
    "HF_HOME",
    "MEDM3_BUNDLE_SOURCE",
    "MEDM3_OPENAI_BASE_URL",
)

#: VILA-M3 checkpoints looked for in the Hugging Face cache.
VILA_REPOS = ("MONAI/Llama3-VILA-M3-3B", "MONAI/Llama3-VILA-M3-8B", "MONAI/Llama3-VILA-M3-13B")

_SECRET_WORDS = ("KEY", "TOKEN", "PASSWORD", "SECRET")


@dataclass
class Check:
    """One line of the report.

    Attributes:
        section: Group (``versions``, ``devices``, ``weights``, ``tools``, ``folders``,
            ``settings``).
        name: What was checked.
        status: ``ok``, ``warn``, ``missing`` or ``info``.
        detail: One line.
        details: More lines (``--verbose``).
    """

    section: str
    name: str
    status: str
    detail: str
    details: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def check_versions() -> list[Check]:
    """medm3, Python and the packages medm3 uses (from metadata: nothing is imported)."""
    from medm3 import __version__

    out = [
        Check("versions", "medm3", "info", __version__),
        Check("versions", "python", "info", f"{platform.python_version()} ({sys.executable})"),
        Check("versions", "platform", "info", platform.platform()),
    ]
    for dist, use in PACKAGES.items():
        version = _version(dist)
        status = "ok" if version else ("missing" if use.startswith("core") else "warn")
        out.append(Check("versions", dist, status, f"{version or 'not installed'} ({use})"))
    return out


def check_devices() -> list[Check]:
    """torch's CUDA and MPS devices (imports torch when installed)."""
    if _version("torch") is None:
        return [
            Check("devices", "torch", "warn", "torch not installed: experts and VLM unavailable")
        ]
    import torch

    out = []
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        cuda = torch.version.cuda
        out.append(Check("devices", "cuda", "ok", f"{len(names)} GPU(s), CUDA {cuda}", names))
    else:
        build = torch.version.cuda
        why = f"torch built for CUDA {build}, no GPU visible" if build else "CPU-only torch build"
        out.append(Check("devices", "cuda", "info", f"not available ({why})"))
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    out.append(Check("devices", "mps", "ok" if has_mps else "info", str(has_mps).lower()))
    out.append(Check("devices", "cpu threads", "info", str(torch.get_num_threads())))
    return out


def _expert_weights(name: str) -> Check:
    from medm3.experts import catalogue

    spec = catalogue.get_spec(name)
    dirs = catalogue.search_dirs(name)
    found = catalogue.find_weights(name)
    details = [f"searched: {d}" for d in dirs]
    if found is not None:
        return Check("weights", name, "ok", f"present in {found}", details)
    try:
        missing = catalogue.missing_files(name, dirs[0])
    except Exception as exc:  # torchxrayvision not installed: file names unknown
        return Check("weights", name, "missing", f"not found ({exc})", details)
    with contextlib.suppress(Exception):
        urls = catalogue.weight_urls(spec)
        details += [f"{file}: {urls.get(file, '')}".rstrip(": ") for file in missing]
    if spec.source == "monai_bundle":
        details.append(f"by hand: {catalogue.manual_command(spec, dirs[0])}")
    return Check(
        "weights",
        name,
        "missing",
        f"not found ({len(missing)} file(s) missing in {dirs[0]}); `m3 experts download {name}`",
        details,
    )


def _vila_weights() -> list[Check]:
    if _version("huggingface_hub") is None:
        return [Check("weights", "VILA-M3", "warn", "huggingface_hub not installed")]
    from huggingface_hub import try_to_load_from_cache

    out = []
    for repo in VILA_REPOS:
        try:
            hit = try_to_load_from_cache(repo, "config.json")
        except Exception:  # a malformed cache entry: report, do not fail
            hit = None
        present = isinstance(hit, str)
        detail = f"in the Hugging Face cache ({Path(hit).parent})" if present else "not downloaded"
        out.append(Check("weights", repo, "ok" if present else "info", detail))
    return out


def check_weights() -> list[Check]:
    """Expert weights (medm3 cache, torchxrayvision's cache) and VILA-M3 checkpoints."""
    from medm3.experts.catalogue import CATALOGUE

    return [_expert_weights(name) for name in CATALOGUE] + _vila_weights()


def _java() -> Check:
    java = shutil.which("java")
    if java is None:
        return Check("tools", "java", "warn", "not found: m3 eval report metrics need Java")
    try:
        proc = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=10, check=False
        )
        first = (proc.stderr or proc.stdout).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        first = "version unknown"
    return Check("tools", "java", "ok", f"{first} ({java})")


def check_tools() -> list[Check]:
    """Java (report metrics) and Chromium (the web-UI browser test)."""
    browser = next(
        (
            p
            for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))
            if p is not None
        ),
        None,
    )
    chromium = (
        Check("tools", "chromium", "ok", browser)
        if browser
        else Check("tools", "chromium", "info", "not found (only the web-UI browser test needs it)")
    )
    return [_java(), chromium]


def _writable(folder: Path) -> tuple[bool, str]:
    """Whether ``folder`` (or, when it does not exist yet, its nearest ancestor) takes files."""
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        return False, f"{folder}: not writable ({probe} is not a folder)"
    try:
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".m3-doctor-"):
            pass
    except OSError as exc:
        return False, f"{folder}: not writable ({exc.strerror or exc})"
    return True, str(folder) if probe == folder else f"{folder} (will be created)"


def check_folders() -> list[Check]:
    """The weights cache and the data folder exist (or can be made) and are writable."""
    from medm3.experts.catalogue import cache_root
    from medm3.utils.paths import data_root

    out = []
    for name, folder in (("cache", cache_root()), ("data dir", data_root())):
        ok, detail = _writable(folder)
        out.append(Check("folders", name, "ok" if ok else "warn", detail))
    return out


def _mask(name: str, value: str) -> str:
    return "***" if any(w in name.upper() for w in _SECRET_WORDS) else value


def check_settings() -> list[Check]:
    """Offline flags, cache locations and DICOMweb settings from the environment."""
    from medm3.experts.catalogue import offline

    out = [
        Check(
            "settings",
            "offline",
            "info",
            "yes (downloads disabled)" if offline() else "no (downloads allowed)",
        )
    ]
    for var in SETTINGS_VARS:
        if var in os.environ:
            out.append(Check("settings", var, "info", _mask(var, os.environ[var])))
    out.append(_dicomweb())
    return out


def _dicomweb() -> Check:
    """DICOMweb credentials: environment variables (masked) and the config file."""
    shown = [f"{v}={_mask(v, os.environ[v])}" for v in sorted(os.environ) if "DICOMWEB" in v]
    try:
        from medm3.dicomweb.config import config_path

        path: Path | None = config_path()
    except ImportError:  # pragma: no cover - older installs without DICOMweb
        path = None
    if path is not None and path.is_file():
        mode = path.stat().st_mode & 0o777
        note = "" if not mode & 0o077 else " (readable by others: it will be refused)"
        shown.append(f"config file {path} (mode {mode:o}){note}")
    elif path is not None:
        shown.append(f"no config file at {path}")
    configured = any("=" in s for s in shown) or (path is not None and path.is_file())
    return Check("settings", "DICOMweb", "ok" if configured else "info", "; ".join(shown))


def run_checks(sections: tuple[str, ...] | None = None) -> list[Check]:
    """Run the checks (all sections by default), in report order."""
    checks = {
        "versions": check_versions,
        "devices": check_devices,
        "weights": check_weights,
        "tools": check_tools,
        "folders": check_folders,
        "settings": check_settings,
    }
    out: list[Check] = []
    for name, fn in checks.items():
        if sections is None or name in sections:
            out.extend(fn())
    return out
