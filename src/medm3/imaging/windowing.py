"""Intensity windowing: physical values (HU, MR signal, stored X-ray values) -> uint8.

A window is ``(width, level)``: values ``<= level - width/2`` map to 0, values
``>= level + width/2`` map to 255, linearly in between (rounded half up).

Window specs accepted by :func:`resolve_window` (case-insensitive):

* CT presets: ``abdomen`` / ``soft_tissue`` (W400 L50), ``lung`` (W1500 L-600),
  ``bone`` (W1800 L400), ``brain`` (W80 L40).
* ``percentile``: 0.5-99.5th percentile of the nonzero values of the *whole*
  image (computed once per volume, so every slice shares one window).
* ``stored``: the DICOM VOI window in ``metadata['window']`` when present,
  else the dtype range for 8-bit data, else the data's full range.
* ``auto`` (default): CT -> ``soft_tissue``; MR, PT -> ``percentile``;
  XR, US, OT -> ``stored``.
* ``"W,L"``: a custom window, e.g. ``"400,40"`` (width > 0).

RGB images are never windowed: :func:`to_uint8_rgb` passes them through.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medm3.errors import InputError
from medm3.imaging.image import MedicalImage

#: CT window presets, name -> (width, level) in HU.
CT_PRESETS: dict[str, tuple[float, float]] = {
    "abdomen": (400.0, 50.0),
    "soft_tissue": (400.0, 50.0),
    "lung": (1500.0, -600.0),
    "bone": (1800.0, 400.0),
    "brain": (80.0, 40.0),
}

#: Data-driven window names (computed from the image).
ADAPTIVE_WINDOWS: tuple[str, ...] = ("auto", "percentile", "stored")

#: Every accepted window name (a custom ``"W,L"`` is accepted too).
WINDOW_NAMES: tuple[str, ...] = (*ADAPTIVE_WINDOWS, *CT_PRESETS)

#: Percentiles used by the ``percentile`` window.
PERCENTILES: tuple[float, float] = (0.5, 99.5)

#: Window chosen by ``auto`` for each modality (anything else -> ``stored``).
AUTO_WINDOW: dict[str, str] = {"CT": "soft_tissue", "MR": "percentile", "PT": "percentile"}


@dataclass(frozen=True)
class Window:
    """A concrete display window.

    Attributes:
        width: Window width (> 0), in the image's units.
        level: Window centre, in the image's units.
        name: How it was chosen: a preset name, ``percentile``, ``stored``
            or ``custom``.
        origin: For ``stored`` windows without a stored DICOM window: where
            the numbers came from (``full 8-bit range``, ``data range``), so
            the description does not claim a stored window.
    """

    width: float
    level: float
    name: str
    origin: str = ""

    @property
    def low(self) -> float:
        """Value mapped to black."""
        return self.level - self.width / 2.0

    @property
    def high(self) -> float:
        """Value mapped to white."""
        return self.level + self.width / 2.0

    def describe(self) -> str:
        """Short text such as ``"soft_tissue (W400 L50)"`` or ``"full 8-bit range (W255 L128)"``."""
        return f"{self.origin or self.name} (W{_fmt(self.width)} L{_fmt(self.level)})"


def _fmt(value: float) -> str:
    if abs(value) >= 100 or abs(value - round(value)) < 1e-6:
        return f"{value:.0f}"
    return f"{value:.3g}"


def _valid_names_text() -> str:
    return ", ".join(WINDOW_NAMES) + ', or "W,L" (e.g. "400,40")'


def parse_window(spec: str) -> str | tuple[float, float]:
    """Validate a window spec without looking at any image.

    Args:
        spec: A window name (see :data:`WINDOW_NAMES`) or ``"W,L"``.

    Returns:
        The normalised lower-case name, or ``(width, level)`` for a custom window.

    Raises:
        InputError: If the spec is neither a known name nor a valid ``"W,L"``.
    """
    text = str(spec).strip().lower()
    name = text.replace("-", "_").replace(" ", "_")
    if name in WINDOW_NAMES:
        return name
    if "," in text:
        parts = [p.strip() for p in text.split(",")]
        if len(parts) == 2:
            try:
                width, level = float(parts[0]), float(parts[1])
            except ValueError:
                pass
            else:
                if not (np.isfinite(width) and np.isfinite(level)):
                    raise InputError(f"window '{spec}' must have finite numbers")
                if width <= 0:
                    raise InputError(f"window '{spec}': width must be > 0 (format is W,L)")
                return (width, level)
    raise InputError(f"unknown window '{spec}'; valid windows: {_valid_names_text()}")


def resolve_window(image: MedicalImage, spec: str = "auto") -> Window:
    """Turn a window spec into a concrete :class:`Window` for ``image``.

    Data-driven windows (``percentile``, ``stored`` without DICOM tags) are
    computed from the whole array, so every slice of a volume shares them.

    Args:
        image: The image to display.
        spec: Window name or ``"W,L"`` (see the module docstring).

    Returns:
        The window to pass to :func:`apply_window`.

    Raises:
        InputError: If ``spec`` is invalid.
    """
    parsed = parse_window(spec)
    if isinstance(parsed, tuple):
        return Window(parsed[0], parsed[1], "custom")
    name = parsed
    if name == "auto":
        name = AUTO_WINDOW.get(image.modality.upper(), "stored")
    if name in CT_PRESETS:
        width, level = CT_PRESETS[name]
        return Window(width, level, name)
    if name == "percentile":
        return percentile_window(image.array)
    return stored_window(image)


def percentile_window(array: np.ndarray, percentiles: tuple[float, float] = PERCENTILES) -> Window:
    """Window spanning the given percentiles of the nonzero finite values.

    Args:
        array: Intensities (a whole volume, not one slice).
        percentiles: Lower and upper percentile, 0-100.

    Returns:
        A window named ``percentile`` (all values are used when none is nonzero).
    """
    values = np.asarray(array)
    values = values[np.isfinite(values)] if values.dtype.kind == "f" else values.ravel()
    nonzero = values[values != 0]
    if nonzero.size:
        values = nonzero
    if values.size == 0:
        return Window(1.0, 0.5, "percentile")
    low, high = (float(v) for v in np.percentile(values, percentiles))
    return _window_from_range(low, high, "percentile")


def stored_window(image: MedicalImage) -> Window:
    """The window stored with the image, or its natural range.

    Uses ``metadata['window']`` (DICOM Window Width/Center) when present; else
    ``0-255`` for 8-bit data; else the data's min-max range.

    Args:
        image: The image.

    Returns:
        A window named ``stored``.
    """
    stored = image.metadata.get("window")
    if stored is not None:
        try:
            width, level = (float(v) for v in stored)
        except (TypeError, ValueError):
            width = level = float("nan")
        if np.isfinite(width) and np.isfinite(level) and width > 0:
            return Window(width, level, "stored")
    array = np.asarray(image.array)
    if array.dtype == np.uint8:
        return _window_from_range(0.0, 255.0, "stored", "full 8-bit range")
    finite = array[np.isfinite(array)] if array.dtype.kind == "f" else array
    if finite.size == 0:
        return Window(1.0, 0.5, "stored", "data range")
    low, high = float(np.min(finite)), float(np.max(finite))
    return _window_from_range(low, high, "stored", "data range")


def _window_from_range(low: float, high: float, name: str, origin: str = "") -> Window:
    if high <= low:  # constant image: put the value mid-grey-ish, avoid dividing by 0
        return Window(1.0, low, name, origin)
    return Window(high - low, (low + high) / 2.0, name, origin)


def apply_window(array: np.ndarray, window: Window) -> np.ndarray:
    """Map intensities to uint8 through ``window``.

    ``level - width/2`` -> 0, ``level`` -> 128, ``level + width/2`` -> 255,
    linear in between, clipped outside; NaN -> 0.

    Args:
        array: Intensities of any shape and numeric dtype.
        window: The display window.

    Returns:
        A uint8 array of the same shape.
    """
    scaled = (np.asarray(array, dtype=np.float64) - window.low) / window.width
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=1.0, neginf=0.0)
    return np.floor(np.clip(scaled, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def to_uint8_rgb(array: np.ndarray) -> np.ndarray:
    """Convert an RGB(A) array to uint8 RGB without windowing.

    uint8 passes through; floats in ``[0, 1]`` are scaled by 255; anything else
    is clipped to ``0-255``.

    Args:
        array: ``(..., 3)`` or ``(..., 4)`` array.

    Returns:
        ``(..., 3)`` uint8 array.
    """
    rgb = np.asarray(array)[..., :3]
    if rgb.dtype == np.uint8:
        return rgb
    values = np.nan_to_num(rgb.astype(np.float64))
    if rgb.dtype.kind == "f" and values.size and values.min() >= 0 and values.max() <= 1.0:
        values = values * 255.0
    return np.clip(np.floor(values + 0.5), 0, 255).astype(np.uint8)
