"""MONAI bundle loading shared by the VISTA3D and BraTS experts.

One way to read a bundle folder (``configs/inference.json``,
``configs/metadata.json``, ``models/model.pt``):

* configs are read as UTF-8 JSON (:func:`read_config`);
* the network comes from the config's ``network_def`` -- a plain constructor of
  :mod:`monai.networks.nets` directly, anything else through
  :class:`monai.bundle.ConfigParser` (the config's ``imports`` are never run)
  after :func:`medm3.experts.bundle_code.check_network_def` has refused code
  that is not a known constructor -- else the expert's default network;
* the checkpoint is loaded with ``weights_only=True`` (memory-mapped when the
  format allows), unwrapped from ``{"model"|"state_dict"|"network": ...}``,
  stripped of a ``module.`` prefix and loaded strictly;
* sliding-window settings come from ``patch_size`` / ``inferer.roi_size``,
  ``inferer.overlap`` / ``overlap`` and ``inferer.sw_batch_size`` when literal.

Error taxonomy (every expert): missing weights raise
:class:`~medm3.experts.catalogue.WeightsNotFoundError` (exit 3, says how to get
them); weights that are present but unusable (unreadable checkpoint, invalid
config, a network or state dict that does not fit) raise
:class:`UnusableWeightsError` (exit 2, naming the file); bad input images raise
:class:`~medm3.experts.base.ExpertError` (exit 2).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medm3.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "BundleRef",
    "UnusableWeightsError",
    "WindowSettings",
    "build_network",
    "load_network",
    "load_state_dict",
    "read_config",
    "read_version",
    "window_settings",
]

#: ``configs/inference.json`` inside a bundle folder.
INFERENCE_CONFIG = Path("configs") / "inference.json"
#: ``configs/metadata.json`` inside a bundle folder.
METADATA = Path("configs") / "metadata.json"
#: ``models/model.pt`` inside a bundle folder.
CHECKPOINT = Path("models") / "model.pt"
_WRAPPER_KEYS = ("model", "state_dict", "network")


class UnusableWeightsError(InputError):
    """Weights are present but cannot be used (corrupt, wrong network, bad config); exit 2."""


@dataclass(frozen=True)
class WindowSettings:
    """Sliding-window inference settings.

    Attributes:
        roi_size: Patch size.
        overlap: Overlap between patches (0 <= overlap < 1).
        sw_batch_size: Patches per forward pass.
    """

    roi_size: tuple[int, ...]
    overlap: float
    sw_batch_size: int = 1


def read_config(folder: Path, name: Path = INFERENCE_CONFIG) -> dict[str, Any]:
    """A bundle config as a dict (``{}`` when the file is absent or not an object).

    Raises:
        UnusableWeightsError: The file exists but is not readable UTF-8 JSON.
    """
    from medm3.utils.jsonio import read_json

    path = Path(folder) / name
    if not path.is_file():
        return {}
    try:
        data = read_json(path, what="the bundle config")
    except InputError as exc:
        raise UnusableWeightsError(exc.message, path) from None
    return data if isinstance(data, dict) else {}


def read_version(folder: Path) -> str:
    """The ``version`` of ``configs/metadata.json`` (``""`` when absent)."""
    return str(read_config(folder, METADATA).get("version", ""))


def window_settings(
    config: Mapping[str, Any], *, roi: tuple[int, ...], overlap: float
) -> WindowSettings:
    """Sliding-window settings from literal config values, else the given defaults."""
    inferer = config.get("inferer")
    inferer = inferer if isinstance(inferer, Mapping) else {}
    size = _positive_triple(config.get("patch_size"), int) or _positive_triple(
        inferer.get("roi_size"), int
    )
    raw = inferer.get("overlap", config.get("overlap"))
    ok = isinstance(raw, (int, float)) and not isinstance(raw, bool) and 0 <= raw < 1
    batch = inferer.get("sw_batch_size", 1)
    batch = batch if isinstance(batch, int) and not isinstance(batch, bool) and batch > 0 else 1
    return WindowSettings(size or roi, float(raw) if ok else overlap, int(batch))


def _positive_triple(value: Any, kind: type) -> tuple[Any, ...] | None:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        return None
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value):
        return tuple(kind(v) for v in value)
    return None


def _is_plain(value: Any) -> bool:
    """True when a config value holds no MONAI expressions/references (``$``, ``@``, ``%``)."""
    if isinstance(value, str):
        return not value.startswith(("$", "@", "%"))
    if isinstance(value, Mapping):
        return all(_is_plain(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    return True


def build_network(
    folder: Path,
    config: Mapping[str, Any],
    default: Callable[[], torch.nn.Module],
    *,
    skip_init: bool = False,
) -> torch.nn.Module:
    """Build the network a bundle describes (no weights loaded).

    Args:
        folder: The bundle folder (``bundle_root`` for config expressions).
        config: Its parsed ``inference.json`` (may be empty).
        default: Builds the expert's network when there is no ``network_def``.
        skip_init: Build on the ``meta`` device (no random initialisation).

    Raises:
        BundleCodeError: ``network_def`` holds code other than a known network
            constructor and the bundle is not trusted.
        UnusableWeightsError: ``network_def`` cannot be built or is not a module.
    """
    import torch

    from medm3.experts.bundle_code import check_network_def

    path = Path(folder) / INFERENCE_CONFIG
    net_def = config.get("network_def")
    if net_def is not None:
        check_network_def(config, path)
    with torch.device("meta") if skip_init else contextlib.nullcontext():
        if net_def is None:
            return default()
        try:
            network = _instantiate(folder, config, net_def)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UnusableWeightsError(
                f"cannot build the network from network_def: {first}", path
            ) from exc
    if not isinstance(network, torch.nn.Module):
        raise UnusableWeightsError(
            f"network_def gave {type(network).__name__}, not a torch.nn.Module", path
        )
    return network


def _instantiate(folder: Path, config: Mapping[str, Any], net_def: Any) -> Any:
    from monai.networks import nets

    plain = isinstance(net_def, Mapping) and _is_plain(net_def)
    short = str(net_def.get("_target_", "")).removeprefix("monai.networks.nets.") if plain else ""
    if plain and short and "." not in short and hasattr(nets, short):
        kwargs = {k: v for k, v in net_def.items() if not str(k).startswith("_")}
        return getattr(nets, short)(**kwargs)
    from monai.bundle import ConfigParser

    parsed = {k: v for k, v in config.items() if k != "imports"}
    parsed["bundle_root"] = str(folder)
    return ConfigParser(parsed).get_parsed_content("network_def", instantiate=True)


def load_state_dict(path: Path, *, expert: str, how_to_get: str) -> dict[str, Any]:
    """Read a checkpoint as a plain state dict (unwrapped, ``module.`` stripped).

    Args:
        path: The ``models/model.pt`` file.
        expert: Expert name for messages (``VISTA3D``).
        how_to_get: What to do when the file is missing (appended to the message).

    Raises:
        WeightsNotFoundError: The file does not exist.
        UnusableWeightsError: Not a readable checkpoint, or no state dict in it.
    """
    import torch

    from medm3.experts.catalogue import WeightsNotFoundError

    file = Path(path)
    if not file.is_file():
        raise WeightsNotFoundError(f"{expert} checkpoint not found: {file} ({how_to_get})")
    try:
        try:
            data = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) format cannot be memory-mapped
            data = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file, truncated, or pickled code
        first = (str(exc).strip().splitlines() or ["unreadable"])[0]
        raise UnusableWeightsError(
            f"cannot read the {expert} checkpoint ({type(exc).__name__}: {first}); "
            "re-download the bundle",
            file,
        ) from None
    if isinstance(data, Mapping):
        for key in _WRAPPER_KEYS:
            inner = data.get(key)
            if isinstance(inner, Mapping) and inner and _is_state_dict(inner):
                data = inner
                break
    if not isinstance(data, Mapping) or not data or not _is_state_dict(data):
        raise UnusableWeightsError(
            "checkpoint holds no state dict (expected a state dict or {'model': state_dict})",
            file,
        )
    prefix = "module."
    if all(str(k).startswith(prefix) for k in data):
        data = {str(k)[len(prefix) :]: v for k, v in data.items()}
    return dict(data)


def _is_state_dict(data: Mapping[Any, Any]) -> bool:
    import torch

    return all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in data.items())


def load_network(
    folder: Path,
    build: Callable[[bool], torch.nn.Module],
    device: Any,
    *,
    expert: str,
    how_to_get: str,
) -> torch.nn.Module:
    """Build the bundle's network and load ``models/model.pt`` into it strictly.

    Parameters are allocated on ``device`` without random initialisation
    (built on ``meta``, then ``to_empty``) and filled from the memory-mapped
    checkpoint; networks with non-persistent buffers are built normally.

    Args:
        folder: The bundle folder.
        build: ``build(skip_init)`` returns the network (e.g. :func:`build_network`).
        device: Where the network goes.
        expert: Expert name for messages.
        how_to_get: What to do when the checkpoint is missing.

    Returns:
        The network on ``device``, in eval mode, float32.

    Raises:
        WeightsNotFoundError: The checkpoint is missing.
        UnusableWeightsError: Unreadable checkpoint, or it does not fit the network.
    """
    path = Path(folder) / CHECKPOINT
    network = build(True)  # refuses untrusted bundle code before the checkpoint is read
    state = load_state_dict(path, expert=expert, how_to_get=how_to_get)
    tensors = {n for n, _ in network.named_parameters()} | {n for n, _ in network.named_buffers()}
    if tensors <= set(network.state_dict()):  # every tensor comes from the checkpoint
        network = network.to_empty(device=device)
    else:  # non-persistent buffers need the constructor's values
        network = build(False).to(device)
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = (str(exc).strip().splitlines() or ["state dict mismatch"])[0]
        raise UnusableWeightsError(
            f"the {expert} checkpoint does not match the network of the bundle ({first}); "
            "re-download the bundle",
            path,
        ) from None
    return network.float().eval()


def amp_name(dtype: Any) -> str | None:
    """``info["amp"]`` of an expert result: the autocast dtype's name, None without AMP.

    Args:
        dtype: ``torch.bfloat16`` / ``torch.float16`` (what
            :func:`medm3.utils.device.autocast_dtype` chose) or None.

    Returns:
        ``"bfloat16"``, ``"float16"`` or None.
    """
    return None if dtype is None else str(dtype).replace("torch.", "")


class BundleRef:
    """The bundle folder and weights identity of one expert instance, resolved once.

    Args:
        name: Catalogue name (``vista3d``, ``brats``).
        weights: Folder given by the user, or ``None`` for the cache.
    """

    def __init__(self, name: str, weights: str | Path | None) -> None:
        self.name = name
        self.weights = weights
        self._folder: Path | None = None
        self._version: str | None = None
        self._lock = threading.Lock()

    @property
    def folder(self) -> Path:
        """The bundle folder (``WeightsNotFoundError`` when missing)."""
        with self._lock:
            if self._folder is None:
                from medm3.experts.catalogue import resolve_weights

                self._folder = resolve_weights(self.name, self.weights)
            return self._folder

    @property
    def version(self) -> str:
        """``catalogue.weights_version`` of the folder (for result-cache keys)."""
        folder = self.folder
        with self._lock:
            if self._version is None:
                from medm3.experts.catalogue import weights_version

                self._version = weights_version(self.name, folder)
            return self._version
