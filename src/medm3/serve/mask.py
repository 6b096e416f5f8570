"""A session's label map: the user's mask (``medm3.mask``) and its label table (``medm3.labels``).

The server's counterpart of ``m3 chat --mask --labels``: the mask is an
uploaded file (so it passed the upload guard: size caps, sniffing, bombs),
checked here to be a label map on the image's grid, and given to the agent as
the ``mask`` input of the study with its label names, exactly as the CLI does;
the MEASURE expert then measures it. Label tables are the built-in ones only
(a server never opens a path a request names).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medm3.serve.errors import bad_request
from medm3.serve.protocol import MaskInfo

if TYPE_CHECKING:  # pragma: no cover
    from medm3.imaging.image import MedicalImage
    from medm3.serve.files import FileStore

#: Name of the mask among a session's inputs (the MEASURE expert's input name).
MASK = "mask"
#: ``medm3.labels`` when the names are detected.
AUTO = "auto"
_PARAM = "medm3.mask"


def split_mask(images: dict[str, str]) -> tuple[dict[str, str], str | None]:
    """``{name: file id}`` of a study without its mask, and the mask's file id (or None)."""
    scans = {k: v for k, v in images.items() if k != MASK}
    return scans, images.get(MASK)


def session_mask(
    files: FileStore, image_id: str, mask_id: str, labels: str | None, *, param: str = _PARAM
) -> tuple[MedicalImage, MaskInfo]:
    """The mask of a session, checked against its image and named.

    Args:
        files: The file store (both files are read through it).
        image_id: File id of the scan the mask labels.
        mask_id: File id of the mask.
        labels: A built-in table name, ``auto`` or None (detect).
        param: The request field that named the mask (in error bodies).

    Returns:
        A copy of the mask carrying ``label_names`` (the cached image is left as it
        is), and what the client is told about it.

    Raises:
        APIError: 400 (``param`` ``medm3.mask``) when the file is not a label map or
            its grid differs from the image's; 404 for an unknown file.
    """
    from medm3.imaging.user_mask import MaskError, name_mask

    image = files.image(image_id)
    mask = files.image(mask_id, param=param)
    table = labels or AUTO
    try:
        named, note = name_mask(image, mask, None if table == AUTO else table, builtin_only=True)
    except MaskError as exc:
        raise bad_request(f"file {mask_id} {exc.message}", param=param, code=exc.code) from None
    if table == AUTO:
        note = _server_wording(note)
    return named, MaskInfo(file_id=mask_id, labels=table, note=note)


def new_study(images: dict[str, str], labels: str | None) -> dict[str, str]:
    """A study's inputs as the agent takes them: with a mask, ``{"image": scan, "mask": mask}``
    (as ``m3 chat --image --mask`` gives them), else as they are.

    Raises:
        APIError: 400 for a mask without exactly one scan, or labels without a mask.
    """
    scans, mask_id = split_mask(images)
    if mask_id is None:
        if labels is not None:
            raise bad_request(
                "medm3.labels names the labels of medm3.mask; give medm3.mask too",
                param="medm3.labels",
            )
        return images
    if len(scans) != 1:
        raise bad_request("medm3.mask goes with one image (the scan it labels)", param=_PARAM)
    return {"image": next(iter(scans.values())), MASK: mask_id}


def same_study(requested: dict[str, str], stored: dict[str, str]) -> bool:
    """Whether a follow-up's images (if any) are the session's: scans, and a mask if sent."""
    scans, mask_id = split_mask(requested)
    stored_scans, stored_mask = split_mask(stored)
    return (not scans or scans == stored_scans) and (mask_id is None or mask_id == stored_mask)


def _server_wording(message: str) -> str:
    """A detection note with the CLI's option names replaced by the request's field."""
    return message.replace("pass --labels FILE.json", "medm3.labels cannot name them").replace(
        "--labels", "medm3.labels"
    )
