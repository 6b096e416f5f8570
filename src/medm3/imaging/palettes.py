"""Colour palettes that name the structures of one overlay.

Two palettes assign colours to the label ids present in one overlay (sorted
ids, background 0 excluded), by rank rather than by id:

* :func:`reference_palette`: the released VILA-M3 system's fixed 16-name list
  (scikit-image's default label colours), cycled over the ids present. The
  list names ``orange`` twice, so two structures may share a name when ten or
  more are present; this is what the released checkpoints were trained on.
* :func:`unique_palette`: the same first names without the repeat, then every
  other distinct CSS colour name in an order that keeps consecutive colours far
  apart (CIELAB); no two structures of one overlay share a name for up to
  :data:`UNIQUE_PALETTE_SIZE` structures.

:func:`color_rgb` turns a name into its CSS RGB value (what scikit-image and
browsers draw for that name).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable

import numpy as np

RGB = tuple[int, int, int]

#: The colour names of the released system's overlays, in order (cycled over the ids present).
REFERENCE_COLORS: tuple[str, ...] = (
    "red",
    "blue",
    "yellow",
    "magenta",
    "green",
    "indigo",
    "darkorange",
    "cyan",
    "pink",
    "brown",
    "orange",
    "lime",
    "orange",
    "gold",
    "yellowgreen",
    "darkgreen",
)


def color_rgb(name: str) -> RGB:
    """The CSS RGB value of a colour name (``"darkorange"`` -> ``(255, 140, 0)``).

    Raises:
        ValueError: Not a CSS colour name.
    """
    from PIL import ImageColor

    rgb = ImageColor.getrgb(name)
    return (int(rgb[0]), int(rgb[1]), int(rgb[2]))


def _present(ids: Iterable[int]) -> list[int]:
    return sorted({int(i) for i in ids if int(i) > 0})


def reference_palette(ids: Iterable[int]) -> dict[int, str]:
    """Colour names of the released protocol: :data:`REFERENCE_COLORS` cycled over sorted ids.

    Args:
        ids: Label ids present in the overlay (0 and duplicates are ignored).

    Returns:
        Id -> colour name, in ascending id order.
    """
    return dict(zip(_present(ids), itertools.cycle(REFERENCE_COLORS), strict=False))


@functools.cache
def unique_colors() -> tuple[str, ...]:
    """All distinct colour names of :func:`unique_palette`, in assignment order."""
    from PIL import ImageColor

    from medm3.imaging.overlay import _srgb_to_lab

    first = tuple(dict.fromkeys(REFERENCE_COLORS))
    taken = {color_rgb(n) for n in first}
    rest: dict[RGB, str] = {}
    for name in sorted(ImageColor.colormap):  # one name per distinct RGB (aqua = cyan ...)
        rgb = color_rgb(name)
        if rgb not in taken and rgb not in rest and rgb != (0, 0, 0):
            rest[rgb] = name
    chosen = list(first)
    lab_rest = _srgb_to_lab(np.array(list(rest)))
    names = list(rest.values())
    nearest = np.min(
        np.linalg.norm(
            lab_rest[:, None, :] - _srgb_to_lab(np.array([color_rgb(n) for n in first]))[None],
            axis=-1,
        ),
        axis=1,
    )
    left = np.ones(len(names), dtype=bool)
    while left.any():
        best = int(np.argmax(np.where(left, nearest, -1.0)))
        chosen.append(names[best])
        left[best] = False
        nearest = np.minimum(nearest, np.linalg.norm(lab_rest - lab_rest[best], axis=1))
    return tuple(chosen)


#: How many structures :func:`unique_palette` names without repeating a name.
UNIQUE_PALETTE_SIZE = 138


def unique_palette(ids: Iterable[int]) -> dict[int, str]:
    """Colour names of the ``medm3`` protocol: a different name for every id present.

    Args:
        ids: Label ids present in the overlay (0 and duplicates are ignored).

    Returns:
        Id -> colour name, ascending ids; names repeat only beyond
        :data:`UNIQUE_PALETTE_SIZE` ids.
    """
    return dict(zip(_present(ids), itertools.cycle(unique_colors()), strict=False))


def palette_rgb(names: dict[int, str]) -> dict[int, RGB]:
    """Id -> RGB for an id -> colour-name mapping."""
    return {i: color_rgb(n) for i, n in names.items()}
