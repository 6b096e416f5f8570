"""What the volume expert builders (expert-vista3d, expert-brats) share.

Both turn one 3D case into several question rows, each an expert-call
conversation (:class:`~medm3.data.conversation.ExpertConversation`). They
take the same options (label source, expert weights and device, rows per
case, question kinds, test fraction, model-card experts, overlay feedback,
protocol), draw the question plan the same way from the item's RNG, chain
MEASURE after a segmentation as the agent does, and label their rows with
the same metadata keys. :class:`ExpertVolumeBuilder` holds that once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from medm3.agent.protocol import Protocol, get_protocol
from medm3.data.base import Builder, BuilderOption, ItemContext, SkipRow, hash_split
from medm3.data.conversation import PROTOCOL_OPTION, ExpertConversation, expert_model_cards
from medm3.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from medm3.experts.base import ExpertResult


def volume_options(
    labels: BuilderOption,
    *extra: BuilderOption,
    expert: str,
    unit: str,
    per_unit: int,
    kinds: Sequence[str],
) -> tuple[BuilderOption, ...]:
    """The options of a volume expert builder, in the order they are listed.

    Args:
        labels: The ``--labels`` choice (reference labels or the expert).
        extra: Builder-specific options listed right after ``--labels``.
        expert: The expert's display name (``VISTA3D``, ``BraTS``).
        unit: What one source item is (``case``, ``volume``).
        per_unit: Default rows per item.
        kinds: The builder's question kinds (the default of ``--kinds``).
    """
    return (
        labels,
        *extra,
        BuilderOption("weights", "path", None, f"{expert} bundle folder (else the cache)."),
        BuilderOption("device", "str", None, f"Device for the {expert} expert (cpu, cuda ...)."),
        BuilderOption(f"questions-per-{unit}", "int", per_unit, f"Rows per {unit}."),
        BuilderOption("kinds", "str", ",".join(kinds), "Question kinds to draw from."),
        BuilderOption("test-fraction", "float", 0.0, f"Fraction of {unit}s in test.json."),
        BuilderOption("experts", "str", "", "Experts in the model cards (default: all)."),
        BuilderOption("no-overlay", "flag", False, "Do not feed overlay images back."),
        PROTOCOL_OPTION,
    )


class ExpertVolumeBuilder(Builder):
    """Base of the builders that ask several expert questions about one 3D case.

    Subclasses set :attr:`KINDS`, :attr:`MEASURE_KINDS` and :attr:`unit`
    and declare their options with :func:`volume_options`.
    """

    shard_size = 4
    splits = ("train", "test")
    #: Question kinds, in the order they are offered.
    KINDS: ClassVar[tuple[str, ...]] = ()
    #: Kinds answered with a MEASURE call (a medm3 card: dropped under ``released``).
    MEASURE_KINDS: ClassVar[tuple[str, ...]] = ()
    #: What one item is (``case``, ``volume``): names ``--questions-per-UNIT``.
    unit: ClassVar[str] = "case"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cards: str | None = None

    @property
    def rows_per_item(self) -> int:
        """The ``--questions-per-UNIT`` value."""
        return int(self.opts[f"questions_per_{self.unit}"])

    def kinds(self) -> list[str]:
        """The requested question kinds (MEASURE kinds need MEASURE in the cards).

        Raises:
            InputError: Unknown kinds, or none.
        """
        kinds = [k.strip() for k in self.opts["kinds"].split(",") if k.strip()]
        unknown = [k for k in kinds if k not in self.KINDS]
        if unknown or not kinds:
            raise InputError(
                f"unknown question kind(s) {', '.join(unknown) or '(none)'}; "
                f"choose from {', '.join(self.KINDS)}"
            )
        experts = [e.strip().lower() for e in self.opts["experts"].split(",") if e.strip()]
        released = self.opts.get("protocol", "released") == "released"
        if released or (experts and "measure" not in experts):  # MEASURE is a medm3 card
            kinds = [k for k in kinds if k not in self.MEASURE_KINDS]
        return kinds

    def check_options(self) -> None:
        """Check the kinds, the rows per item and the test fraction.

        Raises:
            InputError: A bad value (the message names the option).
        """
        self.kinds()
        if self.rows_per_item < 1:
            raise InputError(f"--questions-per-{self.unit} must be at least 1")
        if not 0.0 <= self.opts["test_fraction"] < 1.0:
            raise InputError("--test-fraction must be in [0, 1)")

    def split_of(self, key: str) -> str:
        """``train``, or a hash split of ``key`` with ``--test-fraction``."""
        fraction = self.opts["test_fraction"]
        return hash_split(key, [("test", fraction), ("train", 1.0)]) if fraction else "train"

    def protocol(self) -> Protocol:
        """The ``--protocol`` conversation protocol."""
        return get_protocol(self.opts["protocol"])

    def cards(self) -> str:
        """The model-card block of the first turn (computed once per builder)."""
        if self._cards is None:
            self._cards = expert_model_cards(self.opts["experts"], self.opts["protocol"])
        return self._cards

    def conversation(self, first_text: str, views: list[str]) -> ExpertConversation:
        """A new conversation with the shown images (overlays fed back unless --no-overlay)."""
        return ExpertConversation(
            first_text,
            views,
            feed_overlay=not self.opts["no_overlay"],
            protocol=self.protocol(),
        )

    def row_meta(
        self, kind: str, question: str, place: tuple[str, str], index: int | None
    ) -> dict[str, Any]:
        """The metadata every row carries; ``place`` is ``(key, name)`` of the item."""
        return {
            "dataset": self.name,
            "question_type": kind,
            "question": question,
            place[0]: place[1],
            "protocol": self.protocol().name,
            "slice": index,
        }

    def draw_plan(
        self, candidates: Mapping[str, Sequence[Any]], ctx: ItemContext, nothing: str
    ) -> list[tuple[str, Any]]:
        """``(kind, target)`` for each row, drawn with the item's RNG.

        Kinds take turns in random order (each requested kind that has a
        target once before any repeats); the target is drawn from the kind's
        candidates.

        Args:
            candidates: Kind -> what it may ask about (empty: not applicable).
            ctx: The item context (its RNG).
            nothing: The skip reason when no requested kind applies.

        Raises:
            SkipRow: No requested kind has a candidate.
        """
        available = [k for k in self.kinds() if candidates[k]]
        if not available:
            raise SkipRow(nothing)
        plan: list[tuple[str, Any]] = []
        pool: list[str] = []
        for _ in range(self.rows_per_item):
            if not pool:
                pool = list(available)
            kind = pool.pop(ctx.rng.randrange(len(pool)))
            options = candidates[kind]
            plan.append((kind, options[ctx.rng.randrange(len(options))]))
        return plan


def run_measure(image: Any, previous: ExpertResult, args: str) -> ExpertResult:
    """MEASURE on a previous segmentation result, chained as the agent chains it.

    Args:
        image: The image MEASURE gets (its spacing gives the volumes).
        previous: The segmentation result whose label map is measured.
        args: MEASURE's argument (a structure name, or ``all``).
    """
    from medm3.experts.base import RunContext
    from medm3.experts.registry import get_expert

    return get_expert("measure").run(
        {"image": image}, args, context=RunContext(previous=[previous]), use_cache=False
    )
