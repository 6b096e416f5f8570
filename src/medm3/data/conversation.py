"""Expert-call conversations for training rows, built exactly as the agent builds them.

The agent (:class:`medm3.agent.session.ChatSession`) sends the first turn from
:func:`medm3.prompts.first_turn` / :func:`~medm3.prompts.brats_first_turn`,
the model answers with :func:`~medm3.prompts.trigger_reply`, the expert's
result returns as the overlay image (when there is one) followed by
:func:`~medm3.prompts.expert_feedback` of ``result.text``. The VILA prompt
template renders an image part as ``<image>\\n``, which is
``prompts.image_join("", text)`` here. :class:`ExpertConversation` records the
same turns, with image files in place of image parts, so training text and
inference text cannot drift apart.

The result texts come from real :class:`~medm3.experts.base.ExpertResult`
objects: the expert itself, or the same expert class fed with reference labels
or precomputed probabilities (:mod:`medm3.data.reference_experts`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from medm3 import prompts
from medm3.data.llava import GPT, HUMAN, make_row

if TYPE_CHECKING:  # pragma: no cover
    from medm3.data.base import ItemContext
    from medm3.experts.base import ExpertResult


def expert_model_cards(experts: str = "") -> str:
    """The model-card block shown in the first turn (as the agent shows it).

    Args:
        experts: Comma-separated expert names; empty: every registered expert,
            which is what the agent offers by default.
    """
    from medm3.experts.registry import model_cards

    names = [n.strip() for n in experts.split(",") if n.strip()]
    return model_cards(names or None)


def overlay_png(result: ExpertResult) -> Any:
    """The first overlay of a result as the RGB picture the agent sends, or None."""
    if not result.overlays:
        return None
    return result.overlays[0].image.convert("RGB")


class ExpertConversation:
    """The turns and image files of one expert-augmented conversation.

    Args:
        first_text: The first user turn (with one image token per image).
        images: Relative paths of the images of the first turn.
        feed_overlay: Send each expert's overlay image back with its text
            (the agent's default, ``AgentConfig.feed_overlay``).
    """

    def __init__(self, first_text: str, images: list[str], *, feed_overlay: bool = True) -> None:
        self.turns: list[tuple[str, str]] = [(HUMAN, first_text)]
        self.images = list(images)
        self.feed_overlay = feed_overlay
        self.triggers: list[str] = []

    def call(
        self,
        result: ExpertResult,
        question: str,
        ctx: ItemContext,
        overlay_name: str,
    ) -> None:
        """Add the model's expert call and the expert's feedback.

        Args:
            result: The expert's result (its ``args`` are the normalised trigger args).
            question: The user's question being answered.
            ctx: The item context (writes the overlay PNG).
            overlay_name: Relative path for the overlay PNG (when fed back).
        """
        from medm3.experts.registry import get_expert_class

        trigger = get_expert_class(result.expert).trigger
        self.turns.append((GPT, prompts.trigger_reply(trigger, result.args)))
        self.triggers.append(prompts.format_trigger(trigger, result.args))
        text = prompts.expert_feedback(result.text, question, trigger)
        picture = overlay_png(result) if self.feed_overlay else None
        if picture is not None:
            self.images.append(ctx.save_png(overlay_name, picture))
            text = prompts.image_join("", text)
        self.turns.append((HUMAN, text))

    def answer(self, text: str) -> None:
        """Add the model's final answer."""
        self.turns.append((GPT, text))

    def row(self, row_id: str, meta: Mapping[str, Any]) -> dict[str, Any]:
        """The finished row (``meta`` gets the list of triggers)."""
        return make_row(row_id, self.turns, self.images, {**meta, "experts": self.triggers})


def save_view(ctx: ItemContext, image: Any, index: int | None, relative: str) -> str:
    """Render and save the picture the agent shows the VLM for a volume.

    The agent's view is ``render_slice(image, plane="axial", index=...,
    window="auto", legend=False)``; the builders show the slice of the
    expert's overlay so the question, the view and the result agree.

    Args:
        ctx: The item context.
        image: The :class:`~medm3.imaging.image.MedicalImage`.
        index: Axial slice index (None: the middle slice).
        relative: Relative path of the PNG.

    Returns:
        ``relative``.
    """
    from medm3.imaging.render import render_slice

    if (ctx.out / relative).is_file() and relative in ctx.written:
        return relative
    picture = render_slice(image, plane="axial", index=index, window="auto", legend=False)
    return ctx.save_png(relative, picture.convert("RGB"))


def slug(text: str) -> str:
    """A file-name-safe form of an argument (``hepatic tumor`` -> ``hepatic-tumor``)."""
    out = "".join(c if c.isalnum() else "-" for c in text.lower())
    return "-".join(p for p in out.split("-") if p) or "none"
