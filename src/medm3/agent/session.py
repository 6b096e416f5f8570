"""The expert-calling agent: a conversation between a VLM, the user and the experts.

One :class:`ChatSession` holds the images of a study and the conversation so
far. :meth:`ChatSession.ask` sends the question (the first time with the model
cards, the rendered image(s) and the modality sentence), detects an expert
call in the answer (a trigger such as ``<VISTA3D(liver)>`` or a native tool
call), runs the expert on the full-resolution data and feeds its result back
(text, and the overlay on the slice the model was shown). Every text and rule
comes from the session's :class:`~medm3.agent.protocol.Protocol`: ``released``
(the released VILA-M3 checkpoints' training conversations: one expert per
question, a "segmented" reply ends the turn) or ``medm3`` (chaining up to
``max_rounds`` calls, repeats refused). Every step is recorded in a
JSON-serialisable trace. A literal ``<image>`` typed by the user is removed:
only the agent places images.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from medm3 import prompts
from medm3.agent.config import (
    TOOLS_SYSTEM_PROMPT,
    AgentConfig,
    AgentReply,
    Turn,
    is_brats_set,
    normalize_images,
)
from medm3.agent.feedback import ShownSlice, build_feedback
from medm3.agent.protocol import (
    Protocol,
    check_fits,
    default_protocol,
    get_protocol,
    is_chest_xray,
    strip_image_tokens,
)
from medm3.agent.trace import Trace
from medm3.agent.triggers import TRIGGER_RE, Trigger, TriggerParse, parse_trigger
from medm3.agent.views import ViewLog, image_parts
from medm3.errors import InputError, MedM3Error
from medm3.experts.base import ExpertError, ExpertResult, RunContext
from medm3.imaging.image import MedicalImage
from medm3.vlm.base import (
    Generation,
    Message,
    Part,
    TextPart,
    VLMBackend,
    collect_stream,
)

__all__ = [
    "TOOLS_SYSTEM_PROMPT",
    "AgentConfig",
    "AgentReply",
    "ChatSession",
    "is_brats_set",
    "normalize_images",
]


class ChatSession:
    """A conversation about one study (one image, or the four BraTS sequences).

    Args:
        backend: The VLM.
        images: The study's image(s); ``None`` for a text-only conversation.
        config: Agent settings.
        on_event: Called with each trace step as it happens (progress display).

    Raises:
        InputError: Unknown protocol, or one the backend cannot speak.
    """

    def __init__(
        self,
        backend: VLMBackend,
        images: MedicalImage | Sequence[MedicalImage] | Mapping[str, MedicalImage] | None,
        config: AgentConfig | None = None,
        *,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.backend = backend
        self.config = config or AgentConfig()
        self.protocol: Protocol = get_protocol(self.config.protocol or default_protocol(backend))
        check_fits(self.protocol, backend)
        self.images = normalize_images(images)
        self.messages: list[Message] = []
        self.results: list[ExpertResult] = []
        self.trace = Trace(on_event=on_event)
        self._questions = 0
        self._expert_names = self._offered_experts()
        self.views = ViewLog()
        self._pending: list[Part] = []
        if hasattr(backend, "add_sensitive_values") and self.images:
            from medm3.agent.privacy import sensitive_values

            backend.add_sensitive_values(sensitive_values(self.images.values()))

    # ------------------------------------------------------------------ setup
    def _offered_experts(self) -> list[str]:
        if not self.config.use_experts:
            return []
        from medm3.experts.registry import expert_names, get_expert_class

        names = list(self.config.experts) if self.config.experts is not None else expert_names()
        return [get_expert_class(n).name for n in names]

    @property
    def main_image(self) -> MedicalImage | None:
        """The image experts run on by default (FLAIR for a BraTS set)."""
        if not self.images:
            return None
        if is_brats_set(self.images):
            return self.images["flair"]
        return next(iter(self.images.values()))

    def _tools(self) -> list[dict[str, Any]] | None:
        if not (self._expert_names and self.backend.supports_tools):
            return None
        from medm3.experts.registry import get_expert_class

        return [get_expert_class(n).tool_schema() for n in self._expert_names]

    def _model_cards(self) -> str:
        if not self._expert_names or self.backend.supports_tools:
            return ""
        return self.protocol.cards(self._expert_names)

    def view(self, image: MedicalImage) -> Any:
        """The RGB picture of ``image`` the VLM sees (a slice for volumes)."""
        from medm3.imaging.render import render_slice

        plane = self.config.plane if image.is_volume else "axial"
        index = self.config.slice_index if image.is_volume else None
        picture = render_slice(
            image, plane=plane, index=index, window=self.config.window, legend=False
        )
        shown = picture.info.get("medm3", {}).get("index") if image.is_volume else None
        for name, candidate in self.images.items():
            if candidate is image:
                self.views.record(
                    name,
                    (plane, None if shown is None else int(shown)),
                    picture,
                    folder=self.config.output_dir,
                    question=self._questions,
                )
        return picture

    def shown_slice(self, name: str | None = None) -> ShownSlice | None:
        """The slice of an input image the model was shown (default: the overlay base).

        The overlay base is T1ce for the BraTS set (the reference overlays BraTS
        labels on it), else the main image.
        """
        if not self.images:
            return None
        if name is None:
            name = "t1ce" if is_brats_set(self.images) else next(iter(self.images))
        image = self.images[name]
        plane, index = self.views.shown.get(name, (self.config.plane, self.config.slice_index))
        if image.is_volume and index is None:
            from medm3.imaging.slicing import default_slice

            index = default_slice(image.spatial_shape, plane)
        return ShownSlice(image, plane if image.is_volume else "axial", index, self.config.window)

    def _first_message(self, question: str) -> Message:
        cards = self._model_cards()
        if self.backend.supports_tools and self._expert_names:
            self.messages.append(Message.text("system", TOOLS_SYSTEM_PROMPT))
        question = strip_image_tokens(question).strip()
        if not self.images:
            text = (cards + question) if cards else question
            return Message.text("user", text)
        if is_brats_set(self.images):
            text = self.protocol.brats_first_turn(question, cards=cards)
            pictures = [self.view(self.images[name]) for name, _ in prompts.BRATS_SEQUENCES]
        else:
            image = self.main_image
            assert image is not None
            chest = is_chest_xray(image, question)
            text = self.protocol.first_turn(question, image.modality, cards=cards, chest=chest)
            pictures = [self.view(image)]
        return Message("user", image_parts(text, pictures))

    # ---------------------------------------------------------------- history
    @property
    def questions_asked(self) -> int:
        """How many questions this conversation has had."""
        return self._questions

    @property
    def pending_feedback(self) -> list[Part]:
        """Expert feedback the next question carries (after a segmentation-only answer)."""
        return list(self._pending)

    def restore(
        self,
        messages: Sequence[Message],
        results: Sequence[ExpertResult],
        questions_asked: int,
        pending: Sequence[Part] = (),
    ) -> None:
        """Continue a saved conversation (same images and settings) from its state.

        Args:
            messages: The conversation so far, as :attr:`messages` held it.
            results: Its expert results (the measure expert reads the last label map).
            questions_asked: :attr:`questions_asked` when it was saved.
            pending: :attr:`pending_feedback` when it was saved.
        """
        self.messages = list(messages)
        self.results = list(results)
        self._questions = int(questions_asked)
        self._pending = list(pending)

    def seed_history(self, history: Sequence[tuple[str, str]]) -> None:
        """Start from earlier turns sent by a stateless client, without generating.

        The first user turn is built like a first question (model cards, the
        rendered image(s), the modality sentence); later turns are added as text.

        Args:
            history: ``(role, text)`` pairs, oldest first, starting with a user turn.

        Raises:
            InputError: The history does not start with a user turn, or the
                conversation already has messages.
        """
        if not history:
            return
        if self.messages:
            raise InputError("history can only seed a new conversation")
        if history[0][0] != "user":
            raise InputError("the conversation history must start with a user turn")
        self.messages.append(self._first_message(history[0][1]))
        for role, text in history[1:]:
            self.messages.append(Message.text(role, strip_image_tokens(text)))  # type: ignore[arg-type]
        self._questions = sum(1 for role, _ in history if role == "user")

    # -------------------------------------------------------------------- ask
    def ask(self, question: str, *, on_text: Callable[[str], None] | None = None) -> AgentReply:
        """Answer one question, calling experts as the model asks for them.

        A literal ``<image>`` in the question is removed (only the agent places
        images). The protocol bounds the expert calls: ``released`` makes at most
        one and ends the turn when the reply is a segmentation-only answer;
        ``medm3`` chains up to ``max_rounds`` and never runs the same trigger
        twice for one question.

        Args:
            question: The user's question.
            on_text: Called with each piece of generated text as it streams.

        Returns:
            The reply with its trace steps.

        Raises:
            InputError: Empty question (also when it held only ``<image>``).
        """
        question = strip_image_tokens(question or "").strip()
        if not question:
            raise InputError("the question is empty")
        first_step = len(self.trace.steps)
        self._questions += 1
        sent = len(self.messages)
        if not self.messages:
            self.messages.append(self._first_message(question))
        else:
            self.messages.append(Message("user", [*self._pending, TextPart(question)]))
        self._pending = []
        self.trace.add(
            "question", text=question, number=self._questions, protocol=self.protocol.name
        )
        for view in self.views.take_steps():
            self.trace.add("view", **view)
        state = Turn(limit=self.protocol.max_calls(self.config.max_rounds))
        gen = self._converse(question, sent, state, on_text)
        return self._reply(gen, state, first_step)

    def _converse(
        self, question: str, sent: int, state: Turn, on_text: Callable[[str], None] | None
    ) -> Generation:
        """Generate, run the expert asked for, feed it back; until an answer. The last reply."""
        while True:
            gen = self._generate(sent, on_text)
            sent = len(self.messages)
            kept = strip_image_tokens(gen.text)
            self.messages.append(Message("assistant", [TextPart(kept)], list(gen.tool_calls)))
            if not self._expert_names:
                return gen
            call = self._detect_call(gen)
            if call.trigger is None and call.error is None:
                return gen
            if state.rounds >= state.limit:
                state.limit_reached = True
                self.trace.add("round_limit", max_rounds=state.limit)
                return gen
            state.rounds += 1
            tool_id = gen.tool_calls[0].id if gen.tool_calls else ""
            parts = self._answer_call(call, gen.text, question, state, tool_id)
            if state.ended:
                return gen
            role = "tool" if tool_id else "user"
            self.messages.append(Message(role, parts, tool_call_id=tool_id))

    def _reply(self, gen: Generation, state: Turn, first_step: int) -> AgentReply:
        """Close the question: save its views, record the answer step, build the reply."""
        answer = (
            strip_image_tokens(gen.text).strip()
            if state.ended
            else (self.messages[-1].plain_text.strip())
        )
        self.views.save()
        self.trace.add(
            "answer",
            text=answer,
            rounds=state.rounds,
            round_limit_reached=state.limit_reached,
            ended_by_segmentation=state.ended,
            protocol=self.protocol.name,
        )
        return AgentReply(
            text=answer,
            rounds=state.rounds,
            results=state.results,
            files=state.files,
            round_limit_reached=state.limit_reached,
            trace=self.trace.steps[first_step:],
            protocol=self.protocol.name,
            ended_by_segmentation=state.ended,
        )

    def _answer_call(
        self, call: TriggerParse, reply: str, question: str, state: Turn, tool_id: str
    ) -> list[Part]:
        """The parts answering one expert call (may end the turn via ``state.ended``)."""
        unavailable = self._unavailable(reply) if call.trigger is None else None
        if unavailable is not None:
            self.trace.add("expert_unavailable", round=state.rounds, trigger=unavailable)
            return [TextPart(self.protocol.unavailable_feedback(unavailable, question))]
        if call.error is not None:
            self.trace.add("expert_error", round=state.rounds, message=call.error)
            return [TextPart(prompts.expert_error_feedback(call.error, question))]
        trigger = call.trigger
        assert trigger is not None
        key = (trigger.trigger.upper(), trigger.args)
        if self.protocol.detects_repeats and key in state.ran:
            self.trace.add("expert_repeat", round=state.rounds, trigger=trigger.text)
            return [TextPart(self.protocol.repeat_feedback(trigger.text, question))]
        state.ran.add(key)
        from medm3.experts.registry import get_expert_class

        task = get_expert_class(trigger.expert).task
        seg_only = not tool_id and self.protocol.segmentation_only(reply, task, trigger.trigger)
        result, written, parts = self._run_expert(
            trigger, question, state.rounds, answer=not seg_only
        )
        if result is not None:
            state.results.append(result)
            state.files.extend(written)
            if seg_only:
                state.ended = True
                self._pending = parts
        return parts

    def _unavailable(self, reply: str) -> str | None:
        """A trigger name the cards announce but this installation does not offer."""
        from medm3.experts.registry import get_expert_class

        offered = {get_expert_class(n).trigger.upper() for n in self._expert_names}
        names = {m.group(1).upper() for m in TRIGGER_RE.finditer(reply)} - {"NAME"}
        if len(names) != 1:
            return None
        name = next(iter(names))
        return name if name in self.protocol.card_triggers() and name not in offered else None

    def _generate(self, since: int, on_text: Callable[[str], None] | None) -> Generation:
        tools = self._tools()
        start = time.perf_counter()
        if on_text is not None and not tools:
            stream = self.backend.stream(self.messages, self.config.generation)
            gen = collect_stream(stream, on_text)  # real finish reason and token counts
        else:
            gen = self.backend.generate(self.messages, self.config.generation, tools=tools)
            if on_text is not None and gen.text:
                on_text(gen.text)
        self.trace.add(
            "generate",
            input=[Trace.message_summary(m) for m in self.messages[since:]],
            output=gen.text,
            tool_calls=[{"name": c.name, "arguments": c.arguments} for c in gen.tool_calls],
            finish_reason=gen.finish_reason,
            prompt_tokens=gen.prompt_tokens,
            completion_tokens=gen.completion_tokens,
            seconds=round(time.perf_counter() - start, 4),
        )
        return gen

    def _detect_call(self, gen: Generation) -> TriggerParse:
        if gen.tool_calls:
            call = gen.tool_calls[0]
            args = str(call.arguments.get("args", "") or "")
            return parse_trigger(prompts.format_trigger(call.name, args), self._expert_names)
        return parse_trigger(gen.text, self._expert_names)

    def _inputs_for(self, expert: Any) -> dict[str, MedicalImage]:
        named = {k: v for k, v in self.images.items() if k in expert.inputs}
        if not named and self.main_image is not None:
            named = {expert.inputs[0]: self.main_image}
        return named

    def _run_expert(
        self, trigger: Trigger, question: str, round_no: int, *, answer: bool = True
    ) -> tuple[ExpertResult | None, list[str], list[Part]]:
        from medm3.experts.catalogue import WeightsNotFoundError
        from medm3.experts.registry import get_expert, get_expert_class

        options: dict[str, Any] = {}
        if self.protocol.ensemble() is not None and get_expert_class(trigger.expert).name == "cxr":
            options["ensemble"] = self.protocol.ensemble()
        shown = self.shown_slice()
        context = RunContext(
            previous=list(self.results),
            plane=self.config.plane,
            slice_index=shown.index if shown is not None else self.config.slice_index,
            output_dir=self.config.output_dir,
            options=options,
        )
        start = time.perf_counter()
        try:
            if self.main_image is None:
                raise ExpertError("there is no image in this conversation to run the expert on")
            weights = self.config.weights.get(trigger.expert)
            expert = get_expert(trigger.expert, device=self.config.device, weights=weights)
            result = expert.run(
                self._inputs_for(expert),
                trigger.args,
                context=context,
                use_cache=self.config.use_cache,
            )
        except WeightsNotFoundError:
            # A setup problem for the user (exit 3 / HTTP 503), not a turn for the model:
            # an answer written without the expert would hide that the weights are missing.
            raise
        except (ExpertError, MedM3Error, ImportError) as exc:
            message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            if isinstance(exc, ImportError):
                message = f"the {trigger.trigger} expert is not installed here ({message})"
            self.trace.add("expert_error", round=round_no, trigger=trigger.text, message=message)
            return None, [], [TextPart(prompts.expert_error_feedback(message, question))]
        fed = build_feedback(
            self.protocol,
            result,
            task=expert.task,
            trigger=trigger.trigger,
            question=question,
            shown=shown,
            answer=answer,
            feed_overlay=self.config.feed_overlay,
        )
        result = fed.result
        self.results.append(result)
        written: list[str] = []
        if self.config.output_dir is not None:
            from medm3.experts.output import save_result

            folder = Path(self.config.output_dir) / f"q{self._questions}_r{round_no}_{expert.name}"
            written = sorted(save_result(result, folder, source_image=self.main_image).values())
        self.trace.add(
            "expert",
            round=round_no,
            trigger=trigger.text,
            expert=trigger.expert,
            args=trigger.args,
            result=result.to_dict(),
            files=written,
            seconds=round(time.perf_counter() - start, 4),
            protocol=self.protocol.name,
        )
        return result, written, image_parts(fed.text, fed.pictures)
