"""The ``hf`` backend: any transformers image-text-to-text model with a chat template.

Works with models that load through ``AutoModelForImageTextToText`` and
``AutoProcessor`` and ship a chat template: Qwen2-VL / Qwen2.5-VL, MedGemma /
Gemma 3, llava-hf LLaVA, Idefics3 / SmolVLM, ... from a Hub id or a local folder.

How a conversation is rendered:

* Each :class:`~medm3.vlm.base.Message` becomes ``{"role", "content": [...]}``
  with ``{"type": "image"}`` entries where image parts stand and
  ``{"type": "text"}`` entries (adjacent text parts joined); the images are
  passed to the processor in the same order.
* ``tool`` turns: most VLM chat templates have no tool role, so a tool turn is
  rendered as a **user** turn whose text starts with ``"Tool result: "``. When
  the template does handle a ``tool`` role (detected by rendering a probe, or
  forced with ``tool_role=True``) the text is sent as a ``tool`` turn (with
  ``tool_call_id``) and its images follow in a user turn.
* Assistant tool calls (not produced by this backend, which has
  ``supports_tools = False``) are written as ``Tool call: NAME {json}`` text.
* Consecutive turns of the same role are merged (templates such as Gemma 3
  require strict user/assistant alternation); a template that rejects the
  system role gets the system text at the start of the first user turn.
* Control tokens of the tokenizer (``<image>``, ``<|im_start|>``, ...) typed
  inside message text are broken with a zero-width space, so user text can
  neither inject turns nor add image placeholders.

Decoding: greedy when ``temperature`` is 0, else sampling (``seed`` honoured
without touching the global RNG); ``min_new_tokens``; stops at the tokenizer's
and the generation config's EOS tokens and at ``GenerationConfig.stop`` strings
(removed from the text). Only new tokens are decoded. :meth:`HFBackend.stream`
uses the shared :mod:`medm3.vlm.streamer`; :meth:`HFBackend.generate_batch` runs real
left-padded batches.

Loading (folder or Hub id, device, dtype, load errors) is in
:mod:`medm3.vlm.hf_loading`; the chat-template entries in :mod:`medm3.vlm.hf_chat`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any

from medm3.errors import InputError, MedM3Error
from medm3.vlm.base import (
    Generation,
    GenerationConfig,
    Message,
    VLMBackend,
)
from medm3.vlm.hf_chat import ChatFormatter
from medm3.vlm.hf_loading import load_hf_model
from medm3.vlm.stops import cut_at_stop

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

__all__ = ["HFBackend"]

log = logging.getLogger(__name__)


class HFBackend(VLMBackend):
    """Transformers vision-language models driven through their chat template.

    Args:
        model_id: Hugging Face Hub id (``google/medgemma-4b-it``) or local folder.
        device: ``cuda``, ``cuda:1``, ``cpu``, ``mps``, or ``auto`` (shard with
            accelerate's ``device_map="auto"``); ``None`` picks CUDA, then MPS, then CPU.
        dtype: ``bfloat16``, ``float16``, ``float32``, ``auto`` (the checkpoint's)
            or a ``torch.dtype``; ``None`` is bfloat16 on CUDA (float16 without
            bf16 support) and float32 elsewhere.
        trust_remote_code: Allow the model's own Python code (only for repos you trust).
        tool_role: Render ``tool`` turns with the template's tool role (True),
            as user text ``Tool result: ...`` (False), or detect it (None).
        batch_size: Largest batch :meth:`generate_batch` runs at once.

    Raises:
        MissingDependencyError: torch or transformers is not installed.
        InputError: A local folder that does not exist, or a bad dtype.
        MedM3Error: The model cannot be loaded (offline, unknown id, not an
            image-text-to-text model, no chat template).
    """

    name = "hf"
    vila_format = False
    supports_tools = False

    def __init__(
        self,
        model_id: str,
        *,
        device: str | None = None,
        dtype: str | Any | None = None,
        trust_remote_code: bool = False,
        tool_role: bool | None = None,
        batch_size: int = 8,
    ) -> None:
        super().__init__(model_id)
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        self.batch_size = batch_size
        self._lock = threading.RLock()
        self._warned_tools = False
        loaded = load_hf_model(
            model_id, device=device, dtype=dtype, trust_remote_code=trust_remote_code
        )
        self.processor, self.model = loaded.processor, loaded.model
        self.device, self.dtype = loaded.device, loaded.dtype
        self.tokenizer = self.processor.tokenizer
        self.chat_format = ChatFormatter(self.processor, tool_role)

    # ------------------------------------------------------------------ prompts

    @property
    def tool_role(self) -> bool:
        """Whether ``tool`` turns use the template's tool role (see :class:`ChatFormatter`)."""
        return self.chat_format.tool_role

    @tool_role.setter
    def tool_role(self, value: bool) -> None:
        self.chat_format.tool_role = value

    def _detect_tool_role(self) -> bool:
        return self.chat_format.detect_tool_role()

    def _to_chat(
        self, messages: Sequence[Message], *, fold_system: bool = False
    ) -> tuple[list[dict[str, Any]], list[Image.Image]]:
        return self.chat_format.to_chat(messages, fold_system=fold_system)

    def render(self, messages: Sequence[Message]) -> tuple[str, list[Image.Image]]:
        """Render a conversation to the prompt string (generation prompt added) and its images.

        Args:
            messages: The conversation.

        Returns:
            The prompt text exactly as tokenized, and the images in placeholder order.

        Raises:
            InputError: Empty conversation or a template that rejects it.
        """
        if not messages:
            raise InputError("cannot generate from an empty conversation")
        from jinja2.exceptions import TemplateError

        chat, images = self._to_chat(messages)
        try:
            prompt = self.processor.apply_chat_template(
                chat, add_generation_prompt=True, tokenize=False
            )
        except TemplateError as first:
            try:  # e.g. "System role not supported": fold the system text into the user turn
                chat, images = self._to_chat(messages, fold_system=True)
                prompt = self.processor.apply_chat_template(
                    chat, add_generation_prompt=True, tokenize=False
                )
            except TemplateError:
                raise InputError(
                    f"the chat template of '{self.model_id}' rejects this conversation: {first}"
                ) from None
        return prompt, images

    # ---------------------------------------------------------------- generation

    def _encode(self, prompts: list[str], images: list[list[Any]]) -> Any:
        kwargs: dict[str, Any] = {"text": prompts, "return_tensors": "pt", "padding": True}
        if any(images):
            kwargs["images"] = images
        bos = getattr(self.tokenizer, "bos_token", None)
        if bos and prompts[0].startswith(bos):
            kwargs["add_special_tokens"] = False  # the template already wrote BOS
        try:
            inputs = self.processor(**kwargs)
        except ValueError as exc:
            raise MedM3Error(f"model '{self.model_id}' cannot process this input: {exc}") from None
        import torch

        device = self.model.device if self.device == "auto" else self.device
        moved = {}
        for key, value in inputs.items():
            if isinstance(value, torch.Tensor):
                value = value.to(device)
                if torch.is_floating_point(value):
                    value = value.to(self.dtype)
            moved[key] = value
        return moved

    def _eos_ids(self) -> list[int]:
        ids: list[int] = []
        for source in (self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id):
            if source is None:
                continue
            for i in source if isinstance(source, (list, tuple)) else [source]:
                if i not in ids:
                    ids.append(int(i))
        return ids

    def _gen_kwargs(self, config: GenerationConfig) -> dict[str, Any]:
        import copy

        gen = copy.deepcopy(self.model.generation_config)
        max_new = max(1, config.max_new_tokens)
        gen.max_new_tokens = max_new
        gen.max_length = None
        gen.min_new_tokens = min(max(0, config.min_new_tokens), max_new)
        gen.do_sample = not config.greedy
        if config.greedy:
            gen.temperature, gen.top_p, gen.top_k = None, None, None
        else:
            gen.temperature, gen.top_p = config.temperature, config.top_p
        gen.eos_token_id = self._eos_ids() or None
        gen.pad_token_id = self.tokenizer.pad_token_id
        kwargs: dict[str, Any] = {"generation_config": gen}
        if config.stop:
            gen.stop_strings = list(config.stop)
            kwargs["tokenizer"] = self.tokenizer
        return kwargs

    def _run_generate(self, inputs: dict[str, Any], config: GenerationConfig, **extra: Any) -> Any:
        import torch

        kwargs = {**inputs, **self._gen_kwargs(config), **extra}
        with torch.inference_mode():
            if config.seed is not None and not config.greedy:
                devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(config.seed)
                    return self.model.generate(**kwargs)
            return self.model.generate(**kwargs)

    def _warn_tools(self, tools: Sequence[dict[str, Any]] | None) -> None:
        if tools and not self._warned_tools:
            self._warned_tools = True
            log.warning(
                "the 'hf' backend has no native tool calling; the %d tool definition(s) are "
                "ignored (describe the experts in the prompt instead)",
                len(tools),
            )

    def generate(
        self,
        messages: Sequence[Message],
        config: GenerationConfig | None = None,
        *,
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> Generation:
        """Generate the next assistant turn (see the module docstring for the rendering).

        Args:
            messages: The conversation.
            config: Decoding settings (default :class:`GenerationConfig`).
            tools: Ignored (this backend has no native tool calling); a warning is logged.

        Returns:
            The generation; ``raw["prompt"]`` holds the rendered prompt.
        """
        self._warn_tools(tools)
        return self._generate_many([messages], config or GenerationConfig())[0]

    def generate_batch(
        self,
        conversations: Sequence[Sequence[Message]],
        config: GenerationConfig | None = None,
    ) -> list[Generation]:
        """Generate for several conversations in left-padded batches of ``batch_size``.

        Conversations with and without images are batched separately (processors
        disagree on empty image lists). Greedy results equal sequential :meth:`generate`.

        Args:
            conversations: The conversations.
            config: Decoding settings shared by all.

        Returns:
            One generation per conversation, in order.
        """
        config = config or GenerationConfig()
        rendered = [self.render(c) for c in conversations]
        results: list[Generation | None] = [None] * len(rendered)
        for with_images in (False, True):
            idx = [i for i, (_, imgs) in enumerate(rendered) if bool(imgs) == with_images]
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start : start + self.batch_size]
                outs = self._generate_rendered([rendered[i] for i in chunk], config)
                for i, out in zip(chunk, outs, strict=True):
                    results[i] = out
        return [r for r in results if r is not None]

    def _generate_many(
        self, conversations: Sequence[Sequence[Message]], config: GenerationConfig
    ) -> list[Generation]:
        return self._generate_rendered([self.render(c) for c in conversations], config)

    def _generate_rendered(
        self, rendered: list[tuple[str, list[Any]]], config: GenerationConfig
    ) -> list[Generation]:
        prompts = [p for p, _ in rendered]
        images = [imgs for _, imgs in rendered]
        with self._lock:
            inputs = self._encode(prompts, images)
            output = self._run_generate(inputs, config)
        start = inputs["input_ids"].shape[1]
        new_tokens = output[:, start:].tolist()
        prompt_lens = inputs["attention_mask"].sum(dim=1).tolist()
        return [
            self._finish_row(row, prompt, int(n_prompt), config)
            for row, prompt, n_prompt in zip(new_tokens, prompts, prompt_lens, strict=True)
        ]

    def _finish_row(
        self, row: Sequence[int], prompt: str, n_prompt: int, config: GenerationConfig
    ) -> Generation:
        """The generation of one row of new tokens (up to the first EOS, padding dropped)."""
        eos = set(self._eos_ids())
        pad = self.tokenizer.pad_token_id
        n = len(row)
        hit_eos = False
        for k, tok in enumerate(row):
            if tok in eos:
                n, hit_eos = k + 1, True
                break
        if not hit_eos:
            while n > 0 and row[n - 1] == pad and pad not in eos:
                n -= 1
        text = self.tokenizer.decode(list(row[:n]), skip_special_tokens=True)
        text, stopped = cut_at_stop(text, config.stop)
        finish = "stop" if (hit_eos or stopped or n < config.max_new_tokens) else "length"
        return Generation(
            text=text,
            finish_reason=finish,
            prompt_tokens=n_prompt,
            completion_tokens=n,
            raw={"prompt": prompt, "model": self.model_id},
        )

    def stream(
        self,
        messages: Sequence[Message],
        config: GenerationConfig | None = None,
        *,
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> Generator[str, None, Generation]:
        """Yield text deltas as they are generated, then return the final :class:`Generation`.

        The concatenated deltas equal :meth:`generate`'s text for the same input
        and greedy decoding; text that may begin a stop string is held back until
        it is known not to. The returned generation (see
        :func:`medm3.vlm.base.collect_stream`) has the real token counts and
        finish reason. Closing the iterator early stops the generation.

        Args:
            messages: The conversation.
            config: Decoding settings.
            tools: Ignored (no native tool calling).

        Yields:
            Text deltas.
        """
        from transformers import StoppingCriteria, StoppingCriteriaList

        from medm3.vlm.streamer import FullTextStreamer, stream_in_thread

        self._warn_tools(tools)
        config = config or GenerationConfig()
        prompt, images = self.render(messages)
        cancel = threading.Event()

        class _Cancel(StoppingCriteria):
            def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> Any:
                import torch

                return torch.full(
                    (input_ids.shape[0],),
                    cancel.is_set(),
                    dtype=torch.bool,
                    device=input_ids.device,
                )

        streamer = FullTextStreamer(self.tokenizer, self._eos_ids(), timeout=None)
        with self._lock:
            inputs = self._encode([prompt], [images])

            def work() -> None:
                self._run_generate(
                    inputs,
                    config,
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([_Cancel()]),
                )

            tokens = yield from stream_in_thread(
                work, streamer, cancel, config.stop, strip=False, name="medm3-hf-stream"
            )
        n_prompt = int(inputs["attention_mask"].sum().item())
        return self._finish_row(tokens, prompt, n_prompt, config)

    def close(self) -> None:
        """Drop the model and free accelerator memory."""
        import gc

        self.model = None  # type: ignore[assignment]
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass
