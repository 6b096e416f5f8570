"""Remote image sources: ``NAME+https://...`` references handed to a plug-in.

:func:`~medm3.imaging.io.load_image` accepts, besides paths, references such
as ``dicomweb+https://pacs.example.org/dicom-web/studies/UID``: the part before
``+`` names an :class:`ImageSource` in :data:`SOURCES`, which reads the image.
Imaging itself knows no source: a source builds on imaging (it usually
downloads files and reads them with imaging's readers) and registers itself,

* built in: ``dicomweb`` (``medm3.dicomweb.fetch:SOURCE``, a PACS through DICOMweb);
* third-party: the ``medm3.image_sources`` entry-point group, e.g.::

      [project.entry-points."medm3.image_sources"]
      xnat = "mypackage.xnat:SOURCE"

A source's module is imported only when a reference of its kind is loaded, so
reading local files never imports it. Strings whose prefix names no registered
source are treated as paths.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from medm3.imaging.image import MedicalImage
from medm3.registry import Registry

# pathlib collapses "//" to "/", so a reference that went through Path() is accepted too.
_REFERENCE = re.compile(r"^([a-z][a-z0-9.-]*)\+https?:/+\S", re.IGNORECASE)


@dataclass(frozen=True)
class ImageSource:
    """A kind of remote reference and how to read it.

    Attributes:
        name: The reference prefix before ``+`` (``"dicomweb"``).
        load: Reads one reference with the read options of ``load_image``
            (a :class:`~medm3.imaging.readers.base.ReadContext`: limits, series
            choice, gap policy); raises :class:`~medm3.errors.InputError` on any
            problem.
    """

    name: str
    load: Callable[[str, Any], MedicalImage]


#: Source name -> ``"module:attribute"`` of its :class:`ImageSource`, plus entry points.
SOURCES: Registry[ImageSource] = Registry(
    "image source", "medm3.image_sources", {"dicomweb": "medm3.dicomweb.fetch:SOURCE"}
)


def reference_source(value: object) -> ImageSource | None:
    """The registered source of a ``NAME+http(s)://`` reference, or None for anything else.

    Args:
        value: What ``load_image`` was given (a path, a string, a list ...).

    Returns:
        The source (its module imported now), or None when ``value`` is not a
        reference of a registered kind.
    """
    try:
        text = os.fspath(value)  # type: ignore[call-overload]
    except TypeError:
        return None
    match = _REFERENCE.match(text) if isinstance(text, str) else None
    if match is None or match.group(1).lower() not in SOURCES:
        return None
    return SOURCES.get(match.group(1))
