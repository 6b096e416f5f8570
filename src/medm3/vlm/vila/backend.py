"""``vila`` backend: the released VILA-M3 checkpoints run natively with transformers classes."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from medm3.errors import InputError
from medm3.utils.device import select_device, select_dtype
from medm3.vlm.base import Generation, GenerationConfig, Message, VLMBackend
from medm3.vlm.stops import cut_at_stop, cut_at_stop_ids
from medm3.vlm.streamer import FullTextStreamer, stream_in_thread
from medm3.vlm.vila.decoding import StopStringCriteria
from medm3.vlm.vila.loader import load_model, resolve_checkpoint
from medm3.vlm.vila.model import TRUNCATION_SIDES, SplicedPrompt
from medm3.vlm.vila.templates import render_prompt
from medm3.vlm.vila.tokenize import IMAGE_TOKEN_INDEX, stop_token_ids, tokenize_prompt

logger = logging.getLogger(__name__)


@dataclass
class _Rendered:
    text: str
    images: list[Any]
    ids: list[int]


class VilaBackend(VLMBackend):
    """VILA-M3 (``MONAI/Llama3-VILA-M3-3B/-8B/-13B``) without the VILA code base.

    Args:
        model_id: Local checkpoint folder or Hub id (e.g. ``MONAI/Llama3-VILA-M3-8B``).
        device: ``auto`` (CUDA if available, also read from ``MEDM3_DEVICE``),
            ``cpu``, ``cuda`` or ``cuda:N``.
        dtype: ``auto`` (fp16 on CUDA like the reference, fp32 on CPU),
            ``float16``, ``bfloat16`` or ``float32``.
        template: ``llama_3`` or ``vicuna_v1``; ``None`` detects it (``llama_3`` when
            the tokenizer has ``<|eot_id|>``).
        max_length: Longest prompt in positions after splicing (default: the
            checkpoint's ``tokenizer_model_max_length``, 4096).
        truncation_side: ``left`` (keep BOS + the end of the prompt) or ``right``
            (keep the start, as the reference). Cutting into an image is an error.
        batch_size: Most conversations per batched ``generate`` call.
        cache_dir: Hugging Face cache folder for Hub ids.
        revision: Hub revision for Hub ids.

    Raises:
        InputError: Missing folder, bad layout, unsupported settings or options.
        MedM3Error: A Hub id that cannot be downloaded (offline, missing).
    """

    name: ClassVar[str] = "vila"
    vila_format: ClassVar[bool] = True
    supports_tools: ClassVar[bool] = False

    def __init__(
        self,
        model_id: str,
        *,
        device: str | None = "auto",
        dtype: str | None = None,
        template: str | None = None,
        max_length: int | None = None,
        truncation_side: str = "left",
        batch_size: int = 16,
        cache_dir: str | os.PathLike[str] | None = None,
        revision: str | None = None,
    ) -> None:
        super().__init__(str(model_id))
        if truncation_side not in TRUNCATION_SIDES:
            raise InputError(f"truncation_side must be one of {TRUNCATION_SIDES}")
        if batch_size < 1:
            raise InputError("batch_size must be at least 1")
        self.device = select_device(device)
        self.dtype = select_dtype(dtype, self.device)
        self.path = resolve_checkpoint(model_id, cache_dir=cache_dir, revision=revision)
        self.model, self.tokenizer, self.template = load_model(
            self.path, device=self.device, dtype=self.dtype, template=template
        )
        self.max_length = max_length or self.model.config.model_max_length
        self.truncation_side = truncation_side
        self.batch_size = batch_size
        self.stop_ids = stop_token_ids(self.tokenizer, self.template)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.stop_ids[0]
        self._reset_generation_config()

    def _reset_generation_config(self) -> None:
        """Drop sampling defaults shipped in ``llm/generation_config.json``.

        Llama-3 checkpoints ship ``do_sample=true, temperature=0.6``; decoding here
        follows :class:`~medm3.vlm.base.GenerationConfig` only.
        """
        from transformers import GenerationConfig as HFGenerationConfig

        llm = self.model.llm
        llm.generation_config = HFGenerationConfig(
            bos_token_id=self.tokenizer.bos_token_id,
            eos_token_id=list(self.stop_ids),
            pad_token_id=self.pad_id,
        )

    # -- prompt preparation --------------------------------------------------------------
    def render(self, conversations: Sequence[Sequence[Message]]) -> list[_Rendered]:
        """Render and tokenise conversations (cheap; no model call).

        Raises:
            InputError: Bad roles, or ``<image>`` placeholders and images that do not match.
        """
        out = []
        for conversation in conversations:
            text, images = render_prompt(conversation, self.template)
            ids = tokenize_prompt(text, self.tokenizer)
            slots = ids.count(IMAGE_TOKEN_INDEX)
            if slots != len(images):
                raise InputError(
                    f"the prompt has {slots} <image> placeholder(s) but {len(images)} image(s) "
                    "were given; use exactly one <image> per image"
                )
            out.append(_Rendered(text, images, ids))
        return out

    def splice(self, rendered: Sequence[_Rendered]) -> list[tuple[SplicedPrompt, str]]:
        """Encode the images (in batches of 32) and splice them into the embeddings.

        Returns:
            One ``(spliced prompt, rendered text)`` per conversation.

        Raises:
            InputError: Truncation would cut an image.
        """
        images = [image for item in rendered for image in item.images]
        features: list[torch.Tensor] = []
        for start in range(0, len(images), 32):  # bound vision-tower memory
            pixels = self.model.preprocess(images[start : start + 32])
            features.extend(self.model.encode_images(pixels))
        out = []
        used = 0
        for item in rendered:
            mine = features[used : used + len(item.images)]
            used += len(item.images)
            spliced = self.model.splice(
                item.ids, mine, max_length=self.max_length, truncation_side=self.truncation_side
            )
            out.append((spliced, item.text))
        return out

    def prepare(
        self, conversations: Sequence[Sequence[Message]]
    ) -> list[tuple[SplicedPrompt, str]]:
        """Render, tokenise and splice conversations (see :meth:`render`, :meth:`splice`)."""
        return self.splice(self.render(conversations))

    def _generate_kwargs(self, config: GenerationConfig) -> dict[str, Any]:
        if config.max_new_tokens < 1 or config.min_new_tokens < 0:
            raise InputError("max_new_tokens must be >= 1 and min_new_tokens >= 0")
        kwargs: dict[str, Any] = {
            "max_new_tokens": config.max_new_tokens,
            "min_new_tokens": min(config.min_new_tokens, config.max_new_tokens),
            "eos_token_id": list(self.stop_ids),
            "pad_token_id": self.pad_id,
            "num_beams": 1,
            "use_cache": True,
        }
        if config.greedy:
            kwargs["do_sample"] = False
        else:
            kwargs.update(do_sample=True, temperature=config.temperature, top_p=config.top_p)
        return kwargs

    def _criteria(self, config: GenerationConfig, cancel: threading.Event | None = None) -> Any:
        from transformers import StoppingCriteriaList

        if not config.stop and cancel is None:
            return None
        return StoppingCriteriaList(
            [
                StopStringCriteria(
                    self.tokenizer, config.stop, self.stop_ids, config.min_new_tokens, cancel
                )
            ]
        )

    @contextlib.contextmanager
    def _seeded(self, config: GenerationConfig) -> Iterator[None]:
        if config.seed is None or config.greedy:
            yield
            return
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(config.seed)
            yield

    def _finish(
        self,
        tokens: Sequence[int],
        prompt: SplicedPrompt,
        text: str,
        config: GenerationConfig,
    ) -> Generation:
        tokens = list(tokens)
        while tokens and tokens[-1] == self.pad_id and self.pad_id not in self.stop_ids:
            tokens.pop()  # rows finished early in a batch are padded
        kept, hit_id = cut_at_stop_ids(tokens, self.stop_ids)
        decoded = self.tokenizer.decode(kept, skip_special_tokens=True)
        answer, hit_text = cut_at_stop(decoded, config.stop, strip=True)
        n_done = len(kept) + (1 if hit_id else 0)
        reason = "stop" if hit_id or hit_text or n_done < config.max_new_tokens else "length"
        return Generation(
            text=answer,
            finish_reason=reason,
            prompt_tokens=int(prompt.embeds.shape[0]),
            completion_tokens=n_done,
            raw={
                "prompt": text,
                "template": self.template,
                "images": len(prompt.image_spans),
                "truncated": prompt.truncated,
            },
        )

    # -- VLMBackend ----------------------------------------------------------------------
    def generate(
        self,
        messages: Sequence[Message],
        config: GenerationConfig | None = None,
        *,
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> Generation:
        """Generate the next assistant turn (``tools`` is ignored: no native tool calls)."""
        return self._run_batch([messages], config or GenerationConfig())[0]

    def generate_batch(
        self,
        conversations: Sequence[Sequence[Message]],
        config: GenerationConfig | None = None,
    ) -> list[Generation]:
        """Generate for several conversations in left-padded batches of ``batch_size``.

        Greedy results equal one-at-a-time :meth:`generate` results (up to
        floating-point ties). Conversations are grouped by prompt length to
        limit padding; results come back in input order.
        """
        config = config or GenerationConfig()
        rendered = self.render(conversations)  # all inputs checked before any generation
        tokens_per_image = 256  # a rough size is enough to group similar lengths
        order = sorted(
            range(len(rendered)),
            key=lambda i: len(rendered[i].ids) + tokens_per_image * len(rendered[i].images),
        )
        results: list[Generation | None] = [None] * len(rendered)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            prepared = self.splice([rendered[i] for i in chunk])
            for index, out in zip(chunk, self._generate_prepared(prepared, config), strict=True):
                results[index] = out
        return [r for r in results if r is not None]

    def _run_batch(
        self, conversations: Sequence[Sequence[Message]], config: GenerationConfig
    ) -> list[Generation]:
        return self._generate_prepared(self.prepare(conversations), config)

    @torch.inference_mode()
    def _generate_prepared(
        self, prepared: Sequence[tuple[SplicedPrompt, str]], config: GenerationConfig
    ) -> list[Generation]:
        embeds, mask = self.model.pad_batch([p for p, _ in prepared])
        with self._seeded(config):
            output = self.model.llm.generate(
                inputs_embeds=embeds,
                attention_mask=mask,
                stopping_criteria=self._criteria(config),
                **self._generate_kwargs(config),
            )
        sequences = output if isinstance(output, torch.Tensor) else output.sequences
        return [
            self._finish(row.tolist(), prompt, text, config)
            for row, (prompt, text) in zip(sequences, prepared, strict=True)
        ]

    def stream(
        self,
        messages: Sequence[Message],
        config: GenerationConfig | None = None,
        *,
        tools: Sequence[dict[str, Any]] | None = None,
    ) -> Generator[str, None, Generation]:
        """Yield text deltas, then return the final :class:`Generation`.

        The deltas concatenate to :meth:`generate`'s text; the returned
        generation (the generator's return value, see
        :func:`medm3.vlm.base.collect_stream`) has the real token counts and
        finish reason. Generation runs in a thread feeding a
        ``TextIteratorStreamer``; closing the iterator early cancels it at the
        next token.
        """
        config = config or GenerationConfig()
        ((prompt, text),) = self.prepare([messages])
        embeds, mask = self.model.pad_batch([prompt])
        streamer = FullTextStreamer(self.tokenizer, self.stop_ids, timeout=None)
        cancel = threading.Event()

        def work() -> None:
            with torch.inference_mode(), self._seeded(config):
                self.model.llm.generate(
                    inputs_embeds=embeds,
                    attention_mask=mask,
                    streamer=streamer,
                    stopping_criteria=self._criteria(config, cancel),
                    **self._generate_kwargs(config),
                )

        tokens = yield from stream_in_thread(
            work, streamer, cancel, config.stop, strip=True, name="vila-stream"
        )
        return self._finish(tokens, prompt, text, config)

    def close(self) -> None:
        """Free the model (and CUDA memory)."""
        self.model = None  # type: ignore[assignment]
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
