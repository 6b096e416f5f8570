"""A user's label map for a scan: checked against the scan and named.

One rule for ``m3 chat --mask --labels`` and the server's ``medm3.mask`` /
``medm3.labels``: the mask must look like a label map and lie on the scan's
grid (:func:`medm3.imaging.overlay.check_mask`); its ids are named from a
table (built-in name, or a JSON file where files may be named) or detected
(:func:`medm3.imaging.label_tables.detect_labels`). The MEASURE expert then
measures it.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

from medm3.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from medm3.imaging.image import MedicalImage

#: ``code`` of a :class:`MaskError` for data that are not a label map.
NOT_A_LABEL_MAP = "not_a_label_map"
#: ``code`` of a :class:`MaskError` for a mask on another grid than the scan's.
MASK_MISMATCH = "mask_mismatch"


class MaskError(InputError):
    """The mask cannot label the scan.

    Attributes:
        code: :data:`NOT_A_LABEL_MAP` or :data:`MASK_MISMATCH`.
    """

    def __init__(self, message: str, path: str | os.PathLike[str] | None, *, code: str) -> None:
        super().__init__(message, path)
        self.code = code


def name_mask(
    image: MedicalImage,
    mask: MedicalImage,
    labels: str | os.PathLike[str] | None = None,
    *,
    builtin_only: bool = False,
) -> tuple[MedicalImage, str]:
    """Check ``mask`` against ``image`` and name its labels.

    Args:
        image: The scan the mask labels.
        mask: The label map, read from a file.
        labels: A built-in table name (``totalseg-ct`` ...), a label-map JSON
            file, or None to detect the names (header table, or the built-in
            table the ids fit).
        builtin_only: Accept only built-in table names for ``labels`` (a server
            never opens a path a request names).

    Returns:
        A copy of the mask whose metadata carry ``label_names`` and
        ``content="label_map"``, and one line saying where the names came from.

    Raises:
        MaskError: Not a label map, or another grid than the image's.
        InputError: A bad ``labels`` value.
    """
    from medm3.imaging.label_tables import get_table, label_names_for, looks_like_label_map
    from medm3.imaging.overlay import check_mask

    if not looks_like_label_map(mask.array):
        raise MaskError(
            "is not a label map (labels are small non-negative integers with 0 as background)",
            mask.source or None,
            code=NOT_A_LABEL_MAP,
        )
    try:
        check_mask(image, mask)
    except InputError as exc:
        raise MaskError(
            f"does not fit the image: {exc.message}", mask.source or None, code=MASK_MISMATCH
        ) from None
    if builtin_only and labels is not None:
        names, note = (
            get_table(os.fspath(labels)),
            f"label names from the built-in table '{labels}'",
        )
    else:
        names, note = label_names_for(mask, labels, modality=image.modality)
    metadata = {**mask.metadata, "label_names": names, "content": "label_map"}
    return dataclasses.replace(mask, metadata=metadata), note
