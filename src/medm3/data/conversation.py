"""Expert-call conversations for training rows, built exactly as the agent builds them.

Every text comes from the same :class:`~medm3.agent.protocol.Protocol` the
agent uses (``--protocol released``: the released checkpoints' training
conversations, the default; ``medm3``: the extensions): the model cards, the
first turn, the assistant's trigger reply and the expert feedback, which
:func:`medm3.agent.feedback.build_feedback` writes from a real
:class:`~medm3.experts.base.ExpertResult` (the expert itself, or the same
expert class fed with reference labels or precomputed probabilities, see
:mod:`medm3.data.reference_experts`), overlay redrawn on the shown slice.
:class:`ExpertConversation` records the same turns, with image files in place
of image parts, so training text and inference text cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from medm3 import prompts
from medm3.agent.feedback import ShownSlice, build_feedback
from medm3.agent.protocol import Protocol, get_protocol
from medm3.data.base import BuilderOption
from medm3.data.llava import GPT, HUMAN, make_row

if TYPE_CHECKING:  # pragma: no cover
    from medm3.data.base import ItemContext
    from medm3.experts.base import ExpertResult


#: The ``--protocol`` option of the expert builders.
PROTOCOL_OPTION = BuilderOption(
    "protocol",
    "choice",
    "released",
    "Conversation protocol: released (the released VILA-M3 training text) or medm3.",
    ("released", "medm3"),
)


def expert_model_cards(experts: str = "", protocol: str | Protocol = "medm3") -> str:
    """The model-card block shown in the first turn (as the agent shows it).

    Args:
        experts: Comma-separated expert names; empty: every registered expert,
            which is what the agent offers by default.
        protocol: ``released`` (always the four trained cards) or ``medm3``.
    """
    from medm3.experts.registry import expert_names

    names = [n.strip() for n in experts.split(",") if n.strip()]
    return get_protocol(protocol).cards(names or expert_names())


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

    def __init__(
        self,
        first_text: str,
        images: list[str],
        *,
        feed_overlay: bool = True,
        protocol: str | Protocol = "medm3",
    ) -> None:
        self.turns: list[tuple[str, str]] = [(HUMAN, first_text)]
        self.images = list(images)
        self.feed_overlay = feed_overlay
        self.protocol = get_protocol(protocol)
        self.triggers: list[str] = []

    def call(
        self,
        result: ExpertResult,
        question: str,
        ctx: ItemContext,
        overlay_name: str,
        *,
        shown: ShownSlice | None = None,
        reply: str | None = None,
    ) -> ExpertResult:
        """Add the model's expert call and the expert's feedback.

        Args:
            result: The expert's result (its ``args`` are the normalised trigger args).
            question: The user's question being answered.
            ctx: The item context (writes the overlay PNG).
            overlay_name: Relative path for the overlay PNG (when fed back).
            shown: The slice the model was shown (segmentations are drawn on it).
            reply: The assistant's trigger reply (default: the protocol's phrasing).

        Returns:
            The result as the model saw it (overlay colours of the shown slice).
        """
        from medm3.experts.registry import get_expert_class

        cls = get_expert_class(result.expert)
        self.turns.append((GPT, reply or self.protocol.trigger_reply(cls.trigger, result.args)))
        self.triggers.append(prompts.format_trigger(cls.trigger, result.args))
        fed = build_feedback(
            self.protocol,
            result,
            task=cls.task,
            trigger=cls.trigger,
            question=question,
            shown=shown,
            feed_overlay=self.feed_overlay,
        )
        for k, picture in enumerate(fed.pictures):
            name = overlay_name if k == 0 else overlay_name.replace(".png", f"_{k}.png")
            self.images.append(ctx.save_png(name, picture))
        self.turns.append((HUMAN, fed.text))
        return fed.result

    def segmentation_answer(self, result: ExpertResult, text: str) -> None:
        """End with a segmentation-only answer (the trigger reply is the answer).

        Args:
            result: The expert's result (its trigger is recorded).
            text: The reply, e.g. ``I segmented the liver using <VISTA3D(organs)>.``.
        """
        from medm3.experts.registry import get_expert_class

        self.triggers.append(
            prompts.format_trigger(get_expert_class(result.expert).trigger, result.args)
        )
        self.turns.append((GPT, text))

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
