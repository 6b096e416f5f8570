"""VILA1.5 conversation templates (``llama_3`` for the 8B, ``vicuna_v1`` for the 3B/13B).

The strings are those the VILA-M3 checkpoints were fine-tuned with, full system
prompt included; :func:`render_prompt` turns :class:`~medm3.vlm.base.Message`
lists into the prompt text.

Rendering rules:

- ``system`` messages replace the template's default system string (their texts
  joined with ``"\\n"``); without one the default is kept.
- ``tool`` messages (expert results) are user turns, as in VILA-M3's agent loop.
- An :class:`~medm3.vlm.base.ImagePart` becomes ``<image>\\n`` where it stands.
  Exactly one ``"\\n"`` follows every ``<image>``: newlines at the start of the
  text right after an image are dropped, so ``[image, "\\nWhat?"]`` and
  ``[image, "What?"]`` both render ``<image>\\nWhat?``. Text is otherwise
  unchanged (no stripping). A literal ``<image>`` typed in a text part is a
  placeholder too; the tokenizer then checks that placeholders and images match.
- Each turn is closed with its role's separator: ``llama_3`` closes every turn
  with ``<|eot_id|>``; ``vicuna_v1`` closes user turns with ``" "`` and assistant
  turns with ``</s>`` (the reference alternates them by position, which is the
  same for alternating turns).
- With ``add_generation_prompt`` (default) the prompt ends with the assistant
  header: ``<|start_header_id|>assistant<|end_header_id|>\\n\\n`` or
  ``ASSISTANT:``. Without it (training text), the last turn of ``llama_3`` is
  closed with ``<|end_of_text|>`` like the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from medm3.errors import InputError
from medm3.vlm.base import ImagePart, Message, TextPart

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

IMAGE_PLACEHOLDER = "<image>"


@dataclass(frozen=True)
class Template:
    """A VILA conversation template.

    Attributes:
        name: ``llama_3`` or ``vicuna_v1``.
        system_prefix: Text before the system string.
        default_system: The system string used in VILA-M3 fine-tuning.
        system_suffix: Text after the system string.
        user_header: Text opening a user turn.
        assistant_header: Text opening an assistant turn.
        generation_prompt: Text ending an inference prompt (the bare assistant header).
        user_sep: Text closing a user turn.
        assistant_sep: Text closing an assistant turn.
        final_sep: Text closing the last turn of a prompt without generation prompt.
        stop_tokens: Special tokens that end generation (removed from the answer).
    """

    name: str
    system_prefix: str
    default_system: str
    system_suffix: str
    user_header: str
    assistant_header: str
    generation_prompt: str
    user_sep: str
    assistant_sep: str
    final_sep: str | None
    stop_tokens: tuple[str, ...]


LLAMA_3 = Template(
    name="llama_3",
    system_prefix="<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n",
    default_system=(
        "You are a helpful language and vision assistant. You are able to understand the "
        "visual content that the user provides, and assist the user with a variety of tasks "
        "using natural language."
    ),
    system_suffix="<|eot_id|>",
    user_header="<|start_header_id|>user<|end_header_id|>\n\n",
    assistant_header="<|start_header_id|>assistant<|end_header_id|>\n\n",
    generation_prompt="<|start_header_id|>assistant<|end_header_id|>\n\n",
    user_sep="<|eot_id|>",
    assistant_sep="<|eot_id|>",
    final_sep="<|end_of_text|>",
    stop_tokens=("<|eot_id|>", "<|end_of_text|>"),
)

VICUNA_V1 = Template(
    name="vicuna_v1",
    system_prefix="",
    default_system=(
        "A chat between a curious user and an artificial intelligence assistant. The "
        "assistant gives helpful, detailed, and polite answers to the user's questions."
    ),
    system_suffix=" ",
    user_header="USER: ",
    assistant_header="ASSISTANT: ",
    generation_prompt="ASSISTANT:",
    user_sep=" ",
    assistant_sep="</s>",
    final_sep=None,
    stop_tokens=("</s>",),
)

TEMPLATES: dict[str, Template] = {t.name: t for t in (LLAMA_3, VICUNA_V1)}


def get_template(template: str | Template) -> Template:
    """Look a template up by name (``llama_3``, ``vicuna_v1``; ``v1`` is an alias).

    Raises:
        InputError: Unknown name.
    """
    if isinstance(template, Template):
        return template
    key = {"v1": "vicuna_v1", "llama3": "llama_3", "llama-3": "llama_3"}.get(template, template)
    if key not in TEMPLATES:
        raise InputError(
            f"unknown VILA conversation template {template!r}; expected one of "
            f"{', '.join(TEMPLATES)}"
        )
    return TEMPLATES[key]


def render_content(content: Sequence[TextPart | ImagePart]) -> tuple[str, list[Image.Image]]:
    """Render a message's parts: text as is, each image as ``<image>\\n``.

    Returns:
        The text and the message's images in order.
    """
    pieces: list[str] = []
    images: list[Image.Image] = []
    after_image = False
    for part in content:
        if isinstance(part, ImagePart):
            pieces.append(IMAGE_PLACEHOLDER + "\n")
            images.append(part.image)
            after_image = True
        else:
            text = part.text.lstrip("\n") if after_image else part.text
            pieces.append(text)
            after_image = after_image and not text
    return "".join(pieces), images


def render_prompt(
    messages: Sequence[Message],
    template: str | Template,
    *,
    add_generation_prompt: bool = True,
) -> tuple[str, list[Image.Image]]:
    """Render a conversation into VILA prompt text.

    Args:
        messages: The conversation (system / user / assistant / tool turns).
        template: ``llama_3``, ``vicuna_v1`` or a :class:`Template`.
        add_generation_prompt: End with the assistant header (inference). Without
            it the text is the training form of a finished conversation.

    Returns:
        ``(text, images)``: the prompt and all images in placeholder order.

    Raises:
        InputError: Unknown template, an image in a system message, an unknown
            role, or no user/assistant turn at all.
    """
    tpl = get_template(template)
    system_parts: list[str] = []
    turns: list[tuple[str, str]] = []
    images: list[Image.Image] = []
    for message in messages:
        text, message_images = render_content(message.content)
        if message.role == "system":
            if message_images:
                raise InputError("VILA-M3 cannot take images in a system message")
            system_parts.append(text)
            continue
        if message.role in ("user", "tool"):
            turns.append(("user", text))
        elif message.role == "assistant":
            turns.append(("assistant", text))
        else:
            raise InputError(f"unknown message role {message.role!r}")
        images.extend(message_images)
    if not turns:
        raise InputError("the conversation has no user message")

    system = "\n".join(system_parts) if system_parts else tpl.default_system
    out = [tpl.system_prefix, system, tpl.system_suffix]
    for index, (role, text) in enumerate(turns):
        header, sep = (
            (tpl.user_header, tpl.user_sep)
            if role == "user"
            else (tpl.assistant_header, tpl.assistant_sep)
        )
        last = index == len(turns) - 1
        if last and not add_generation_prompt and tpl.final_sep is not None:
            sep = tpl.final_sep
        out += [header, text, sep]
    if add_generation_prompt:
        out.append(tpl.generation_prompt)
    return "".join(out), images
