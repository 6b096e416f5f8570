"""The expert-calling agent: a conversation between a VLM, the user and the experts.

One :class:`ChatSession` holds the images of a study and the conversation so
far. :meth:`ChatSession.ask` sends the question (the first time with the model
cards, the rendered image(s) and the modality sentence, in the VILA-M3 format
from :mod:`medm3.prompts`), detects an expert call in the answer (a trigger such
as ``<VISTA3D(liver)>`` or a native tool call), runs the expert on the
full-resolution data, feeds its result (text + overlay image) back, and
repeats up to ``max_rounds`` times so experts can chain (segment, then
measure). Every step is recorded in a JSON-serialisable trace.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medm3 import prompts
from medm3.agent.trace import Trace
from medm3.agent.triggers import Trigger, TriggerParse, parse_trigger
from medm3.errors import InputError
from medm3.experts.base import ExpertError, ExpertResult, RunContext
from medm3.imaging.image import MedicalImage
from medm3.vlm.base import (
    Generation,
    GenerationConfig,
    ImagePart,
    Message,
    Part,
    TextPart,
    VLMBackend,
)

#: System prompt for tool-calling backends (the VILA-M3 models get model cards instead).
TOOLS_SYSTEM_PROMPT = (
    "You are a medical imaging assistant. You see a rendered view of the user's scan. "
    "When a precise answer needs segmentation, classification or measurement, call the "
    "matching expert tool; it runs on the full-resolution data and returns its findings "
    "and an overlay image. Then answer the user's question using the result."
)


@dataclass
class AgentConfig:
    """Settings of the agent loop.

    Attributes:
        experts: Registry names of the experts offered (``None``: all registered).
        use_experts: Offer experts at all (``False``: plain VLM answers).
        max_rounds: Most expert calls per question.
        feed_overlay: Send the expert's overlay image back with its text.
        plane: Plane of the view the VLM sees for volumes.
        slice_index: Slice the VLM sees (``None``: middle slice; experts choose
            the slice of their overlay themselves unless this is set).
        window: Window for rendering the VLM's view (``auto`` by modality).
        device: Device for the experts (``None``: automatic).
        weights: Expert name -> local weights folder overriding the cache.
        generation: Decoding settings.
        output_dir: Where overlays, label maps and results of each call are saved.
        use_cache: Use the expert result cache.
    """

    experts: tuple[str, ...] | None = None
    use_experts: bool = True
    max_rounds: int = 3
    feed_overlay: bool = True
    plane: str = "axial"
    slice_index: int | None = None
    window: str = "auto"
    device: str | None = None
    weights: Mapping[str, str | Path] = field(default_factory=dict)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    output_dir: Path | None = None
    use_cache: bool = True


@dataclass
class AgentReply:
    """The answer to one question.

    Attributes:
        text: The final answer.
        rounds: Expert calls made for this question.
        results: The expert results obtained for this question.
        files: Files written (overlays, label maps, result JSON).
        round_limit_reached: True when the model still asked for an expert after
            ``max_rounds`` calls.
        trace: The steps of this question (see :class:`~medm3.agent.trace.Trace`).
    """

    text: str
    rounds: int
    results: list[ExpertResult]
    files: list[str]
    round_limit_reached: bool
    trace: list[dict[str, Any]]


def normalize_images(
    images: MedicalImage | Sequence[MedicalImage] | Mapping[str, MedicalImage] | None,
) -> dict[str, MedicalImage]:
    """Name the input images: one image -> ``image``; BraTS sequences keep their names.

    Raises:
        InputError: Several unnamed images (the agent cannot guess their roles).
    """
    if images is None:
        return {}
    if isinstance(images, MedicalImage):
        return {"image": images}
    if isinstance(images, Mapping):
        return {str(k).lower(): v for k, v in images.items()}
    seq = list(images)
    if len(seq) == 1:
        return {"image": seq[0]}
    if not seq:
        return {}
    raise InputError(
        "several images need names (e.g. t1ce=, t1=, t2=, flair= for BraTS); "
        f"got {len(seq)} unnamed images"
    )


def is_brats_set(images: Mapping[str, MedicalImage]) -> bool:
    """True when the images are the four named BraTS MRI sequences."""
    return set(images) == {name for name, _ in prompts.BRATS_SEQUENCES}


class ChatSession:
    """A conversation about one study (one image, or the four BraTS sequences).

    Args:
        backend: The VLM.
        images: The study's image(s); ``None`` for a text-only conversation.
        config: Agent settings.
        on_event: Called with each trace step as it happens (progress display).
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
        self.images = normalize_images(images)
        self.messages: list[Message] = []
        self.results: list[ExpertResult] = []
        self.trace = Trace(on_event=on_event)
        self._questions = 0
        self._expert_names = self._offered_experts()
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
        from medm3.experts.registry import model_cards

        return model_cards(self._expert_names)

    def view(self, image: MedicalImage) -> Any:
        """The RGB picture of ``image`` the VLM sees (a slice for volumes)."""
        from medm3.imaging.render import render_slice

        plane = self.config.plane if image.is_volume else "axial"
        index = self.config.slice_index if image.is_volume else None
        return render_slice(
            image, plane=plane, index=index, window=self.config.window, legend=False
        )

    def _parts(self, text: str, pictures: list[Any]) -> list[Part]:
        parts: list[Part] = []
        pics = iter(pictures)
        for piece in prompts.split_images(text):
            if piece is None:
                parts.append(ImagePart(next(pics)))
            else:
                parts.append(TextPart(piece))
        return parts

    def _first_message(self, question: str) -> Message:
        cards = self._model_cards()
        if self.backend.supports_tools and self._expert_names:
            self.messages.append(Message.text("system", TOOLS_SYSTEM_PROMPT))
        if not self.images:
            text = (cards + question.strip()) if cards else question.strip()
            return Message.text("user", text)
        if is_brats_set(self.images):
            text = prompts.brats_first_turn(question, model_cards=cards)
            pictures = [self.view(self.images[name]) for name, _ in prompts.BRATS_SEQUENCES]
        else:
            image = self.main_image
            assert image is not None
            text = prompts.first_turn(question, image.modality, model_cards=cards)
            pictures = [self.view(image)]
        return Message("user", self._parts(text, pictures))

    # ---------------------------------------------------------------- history
    @property
    def questions_asked(self) -> int:
        """How many questions this conversation has had."""
        return self._questions

    def restore(
        self, messages: Sequence[Message], results: Sequence[ExpertResult], questions_asked: int
    ) -> None:
        """Continue a saved conversation (same images and settings) from its state.

        Args:
            messages: The conversation so far, as :attr:`messages` held it.
            results: Its expert results (the measure expert reads the last label map).
            questions_asked: :attr:`questions_asked` when it was saved.
        """
        self.messages = list(messages)
        self.results = list(results)
        self._questions = int(questions_asked)

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
            self.messages.append(Message.text(role, text))  # type: ignore[arg-type]
        self._questions = sum(1 for role, _ in history if role == "user")

    # -------------------------------------------------------------------- ask
    def ask(self, question: str, *, on_text: Callable[[str], None] | None = None) -> AgentReply:
        """Answer one question, calling experts as the model asks for them.

        Args:
            question: The user's question.
            on_text: Called with each piece of generated text as it streams.

        Returns:
            The reply with its trace steps.

        Raises:
            InputError: Empty question.
        """
        if not question or not question.strip():
            raise InputError("the question is empty")
        first_step = len(self.trace.steps)
        self._questions += 1
        sent = len(self.messages)
        if not self.messages:
            self.messages.append(self._first_message(question))
        else:
            self.messages.append(Message.text("user", question.strip()))
        self.trace.add("question", text=question.strip(), number=self._questions)

        results: list[ExpertResult] = []
        files: list[str] = []
        rounds = 0
        limit_reached = False
        while True:
            gen = self._generate(sent, on_text)
            sent = len(self.messages)
            self.messages.append(Message("assistant", [TextPart(gen.text)], list(gen.tool_calls)))
            if not self._expert_names:
                break
            call = self._detect_call(gen)
            if call.trigger is None and call.error is None:
                break
            if rounds >= self.config.max_rounds:
                limit_reached = True
                self.trace.add("round_limit", max_rounds=self.config.max_rounds)
                break
            rounds += 1
            tool_id = gen.tool_calls[0].id if gen.tool_calls else ""
            if call.error is not None:
                self.trace.add("expert_error", round=rounds, message=call.error)
                feedback = [TextPart(prompts.expert_error_feedback(call.error, question))]
            else:
                assert call.trigger is not None
                result, written, feedback = self._run_expert(call.trigger, question, rounds)
                if result is not None:
                    results.append(result)
                    files.extend(written)
            if tool_id:
                self.messages.append(Message("tool", feedback, tool_call_id=tool_id))
            else:
                self.messages.append(Message("user", feedback))
        answer = self.messages[-1].plain_text.strip()
        self.trace.add("answer", text=answer, rounds=rounds, round_limit_reached=limit_reached)
        return AgentReply(
            text=answer,
            rounds=rounds,
            results=results,
            files=files,
            round_limit_reached=limit_reached,
            trace=self.trace.steps[first_step:],
        )

    def _generate(self, since: int, on_text: Callable[[str], None] | None) -> Generation:
        tools = self._tools()
        start = time.perf_counter()
        if on_text is not None and not tools:
            pieces: list[str] = []
            for delta in self.backend.stream(self.messages, self.config.generation):
                pieces.append(delta)
                on_text(delta)
            gen = Generation(text="".join(pieces))
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
        self, trigger: Trigger, question: str, round_no: int
    ) -> tuple[ExpertResult | None, list[str], list[Part]]:
        from medm3.experts.registry import get_expert

        weights = self.config.weights.get(trigger.expert)
        expert = get_expert(trigger.expert, device=self.config.device, weights=weights)
        context = RunContext(
            previous=list(self.results),
            plane=self.config.plane,
            slice_index=self.config.slice_index,
            output_dir=self.config.output_dir,
        )
        start = time.perf_counter()
        try:
            if self.main_image is None:
                raise ExpertError("there is no image in this conversation to run the expert on")
            result = expert.run(
                self._inputs_for(expert),
                trigger.args,
                context=context,
                use_cache=self.config.use_cache,
            )
        except ExpertError as exc:
            self.trace.add(
                "expert_error", round=round_no, trigger=trigger.text, message=exc.message
            )
            return None, [], [TextPart(prompts.expert_error_feedback(exc.message, question))]
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
        )
        text = prompts.expert_feedback(result.text, question, trigger.trigger)
        parts: list[Part] = []
        if self.config.feed_overlay and result.overlays:
            parts.append(ImagePart(result.overlays[0].image.convert("RGB")))
        parts.append(TextPart(text))
        return result, written, parts
