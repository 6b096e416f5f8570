"""The views a VLM is shown in a conversation: which slice, the trace steps, the saved PNGs.

A :class:`ViewLog` remembers, per input image, the plane and slice the model
saw (segmentation overlays are drawn on it), turns each view into a ``view``
trace step (image, plane, slice, window, size, ``files``) and, with an output
folder, writes the view as a PNG once the question is answered, so that a
failed call leaves nothing behind. :func:`image_parts` places the pictures in a
message.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from medm3.vlm.base import Part


class ViewLog:
    """The views of one conversation (see the module docstring)."""

    def __init__(self) -> None:
        #: input name -> (plane, slice index or None) last shown to the model.
        self.shown: dict[str, tuple[str, int | None]] = {}
        self._steps: list[dict[str, Any]] = []
        self._pictures: list[tuple[Path, Any]] = []

    def record(
        self,
        name: str,
        shown: tuple[str, int | None],
        picture: Any,
        *,
        folder: Path | None,
        question: int,
    ) -> None:
        """Remember the view ``picture`` of input ``name`` (a render_slice output).

        Args:
            name: The input's name (``image``, ``t1ce`` ...).
            shown: The plane and slice shown (slice ``None`` for a 2-D image).
            picture: The rendered picture (its ``info["medm3"]`` says slice and window).
            folder: Where to save it (``None``: not saved).
            question: The number of the question it belongs to (names the file).
        """
        meta = picture.info.get("medm3", {})
        self.shown[name] = shown
        step: dict[str, Any] = {
            "image": name,
            "plane": meta.get("plane"),
            "slice": meta.get("index"),
            "num_slices": meta.get("num_slices"),
            "window": (meta.get("window") or {}).get("text"),
            "size": list(picture.size),
            "files": [],
        }
        if folder is not None:
            path = Path(folder) / f"q{question}_view_{name}_{step['plane']}_{step['slice']}.png"
            step["files"] = [str(path)]
            self._pictures.append((path, picture))
        self._steps.append(step)

    def take_steps(self) -> list[dict[str, Any]]:
        """The ``view`` steps recorded since the last call (they go after the question)."""
        steps, self._steps = self._steps, []
        return steps

    def save(self) -> None:
        """Write the pictures recorded so far (atomically), then forget them."""
        from medm3.utils.atomic import atomic_path

        for path, picture in self._pictures:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                picture.save(tmp, format="PNG")
        self._pictures = []


def image_parts(text: str, pictures: list[Any]) -> list[Part]:
    """Message parts from text with one agent-placed ``<image>`` per picture.

    Raises:
        InputError: The placeholders and pictures differ in number (only the
            agent places images; nothing is guessed).
    """
    from medm3 import prompts
    from medm3.errors import InputError
    from medm3.vlm.base import ImagePart, TextPart

    pieces = prompts.split_images(text)
    slots = sum(1 for piece in pieces if piece is None)
    if slots != len(pictures):
        raise InputError(f"internal: {slots} image placeholder(s) for {len(pictures)} image(s)")
    pics = iter(pictures)
    return [ImagePart(next(pics)) if piece is None else TextPart(piece) for piece in pieces]
