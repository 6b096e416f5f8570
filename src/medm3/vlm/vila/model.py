"""The composed VILA-M3 model: SigLIP tower + ``mlp_downsample`` projector + Llama LLM.

Image features are SigLIP's ``hidden_states[-2]`` (all tokens, no post-layernorm,
no pooling head), projected to the LLM width. Prompt ids are embedded with the
sentinel replaced by 0, then each sentinel position is replaced by that
image's projected tokens, images consumed in order (no start/end/newline
embeddings).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from medm3.errors import InputError
from medm3.vlm.vila.config import VilaConfig
from medm3.vlm.vila.projector import MlpDownsampleProjector
from medm3.vlm.vila.tokenize import IMAGE_TOKEN_INDEX

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

logger = logging.getLogger(__name__)

TRUNCATION_SIDES = ("left", "right")


@dataclass
class SplicedPrompt:
    """One prompt ready for the LLM.

    Attributes:
        embeds: ``(L, H)`` input embeddings.
        image_spans: ``(start, end)`` positions of each image's tokens in ``embeds``.
        truncated: Positions removed by truncation.
    """

    embeds: torch.Tensor
    image_spans: list[tuple[int, int]]
    truncated: int = 0


class VilaModel(nn.Module):
    """Vision tower, projector and LLM of a VILA-M3 checkpoint.

    Args:
        config: The checkpoint's :class:`~medm3.vlm.vila.config.VilaConfig`.
        vision_tower: A ``SiglipVisionModel``.
        projector: The ``mlp_downsample`` projector.
        llm: A ``LlamaForCausalLM``.
        image_processor: The slow (PIL) SigLIP image processor of ``vision_tower/``.
    """

    def __init__(
        self,
        config: VilaConfig,
        vision_tower: nn.Module,
        projector: MlpDownsampleProjector,
        llm: nn.Module,
        image_processor: Any,
    ) -> None:
        super().__init__()
        self.config = config
        self.vision_tower = vision_tower
        self.projector = projector
        self.llm = llm
        self.image_processor = image_processor

    @property
    def device(self) -> torch.device:
        """Device of the LLM weights."""
        return next(self.llm.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Compute dtype of the LLM weights."""
        return next(self.llm.parameters()).dtype

    # -- images -------------------------------------------------------------------------
    def _pad_to_square(self, image: Image.Image) -> Image.Image:
        from PIL import Image as PILImage

        width, height = image.size
        if width == height:
            return image
        mean = self.image_processor.image_mean
        background = tuple(int(255 * m) for m in mean)  # as LLaVA's expand2square
        side = max(width, height)
        canvas = PILImage.new(image.mode, (side, side), background)
        canvas.paste(image, ((side - width) // 2, (side - height) // 2))
        return canvas

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """``resize`` preprocessing: RGB, PIL bicubic resize, 1/255, mean/std 0.5.

        Returns:
            ``(n, 3, S, S)`` float32 pixel values on the CPU.
        """
        rgb = [image.convert("RGB") for image in images]
        if self.config.image_aspect_ratio == "pad":
            rgb = [self._pad_to_square(image) for image in rgb]
        out = self.image_processor(images=rgb, return_tensors="pt")
        return out["pixel_values"]

    @torch.inference_mode()
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Vision features projected to the LLM width (inference: no gradients).

        Args:
            pixel_values: ``(n, 3, S, S)`` from :meth:`preprocess`.

        Returns:
            ``(n, T, H)``: T = 196 for the released checkpoints (27x27 -> 14x14).
        """
        return self.project_images(pixel_values).to(self.dtype)

    def project_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """SigLIP hidden state ``mm_vision_select_layer`` -> projector, with autograd.

        Shared by inference (:meth:`encode_images`) and training, so both see
        the same features. Returns the projector's output in its own dtype.
        """
        vt_dtype = next(self.vision_tower.parameters()).dtype
        out = self.vision_tower(
            pixel_values=pixel_values.to(device=self.device, dtype=vt_dtype),
            output_hidden_states=True,
        )
        features = out.hidden_states[self.config.vision_select_layer]
        if self.config.vision_select_feature == "patch":
            features = features[:, 1:]
        proj_dtype = next(self.projector.parameters()).dtype
        return self.projector(features.to(proj_dtype))

    # -- prompts ------------------------------------------------------------------------
    @torch.inference_mode()
    def splice(
        self,
        ids: Sequence[int],
        image_features: torch.Tensor | Sequence[torch.Tensor],
        *,
        max_length: int | None = None,
        truncation_side: str = "left",
    ) -> SplicedPrompt:
        """Embed ``ids`` and put each image's features at its sentinel.

        Args:
            ids: Prompt ids with :data:`IMAGE_TOKEN_INDEX` sentinels.
            image_features: One ``(T, H)`` tensor per sentinel, in order.
            max_length: Longest sequence kept (positions after splicing).
            truncation_side: ``left`` keeps the end of the prompt (the question
                and the generation prompt) and the leading BOS; ``right`` keeps
                the start, like the reference (which then loses the generation
                prompt).

        Raises:
            InputError: Sentinels and images do not match, an id is outside the
                vocabulary, or truncation would cut an image.
        """
        n_slots = sum(1 for i in ids if i == IMAGE_TOKEN_INDEX)
        if n_slots != len(image_features):
            raise InputError(
                f"the prompt has {n_slots} <image> placeholder(s) but {len(image_features)} "
                "image(s) were given; use exactly one <image> per image"
            )
        vocab = self.llm.get_input_embeddings().num_embeddings
        bad = [i for i in ids if i != IMAGE_TOKEN_INDEX and not 0 <= i < vocab]
        if bad:
            raise InputError(f"token id {bad[0]} is outside the LLM vocabulary ({vocab})")
        id_tensor = torch.tensor(list(ids), dtype=torch.long, device=self.device)
        is_image = id_tensor == IMAGE_TOKEN_INDEX
        text_embeds = self.llm.get_input_embeddings()(id_tensor.masked_fill(is_image, 0))
        pieces: list[torch.Tensor] = []
        spans: list[tuple[int, int]] = []
        position = 0
        start = 0
        slots = is_image.nonzero().flatten().tolist()
        for slot, features in zip(slots, image_features, strict=True):
            pieces.append(text_embeds[start:slot])
            position += slot - start
            pieces.append(features.to(device=self.device, dtype=text_embeds.dtype))
            spans.append((position, position + features.shape[0]))
            position += features.shape[0]
            start = slot + 1
        pieces.append(text_embeds[start:])
        embeds = torch.cat(pieces, dim=0)
        return self._truncate(SplicedPrompt(embeds, spans), ids, max_length, truncation_side)

    def _truncate(
        self,
        prompt: SplicedPrompt,
        ids: Sequence[int],
        max_length: int | None,
        side: str,
    ) -> SplicedPrompt:
        length = prompt.embeds.shape[0]
        if max_length is None or length <= max_length:
            return prompt
        if side not in TRUNCATION_SIDES:
            raise InputError(f"truncation_side must be one of {TRUNCATION_SIDES}, got {side!r}")
        cut = length - max_length
        if side == "right":
            if any(end > max_length for _, end in prompt.image_spans):
                raise self._cut_error(length, max_length, len(prompt.image_spans))
            logger.warning("prompt of %d positions truncated to its first %d", length, max_length)
            return SplicedPrompt(prompt.embeds[:max_length], prompt.image_spans, cut)
        keep_bos = 1 if ids and ids[0] == self.llm.config.bos_token_id else 0
        # Positions [keep_bos, keep_bos + cut) are removed.
        if any(start < keep_bos + cut for start, _ in prompt.image_spans):
            raise self._cut_error(length, max_length, len(prompt.image_spans))
        logger.warning(
            "prompt of %d positions truncated to its last %d (oldest text dropped)",
            length,
            max_length,
        )
        embeds = torch.cat([prompt.embeds[:keep_bos], prompt.embeds[keep_bos + cut :]], dim=0)
        spans = [(start - cut, end - cut) for start, end in prompt.image_spans]
        return SplicedPrompt(embeds, spans, cut)

    @staticmethod
    def _cut_error(length: int, max_length: int, n_images: int) -> InputError:
        return InputError(
            f"the prompt is {length} positions long after splicing {n_images} image(s), over "
            f"the {max_length}-position limit, and truncating it would cut an image; "
            "shorten the conversation or send fewer images"
        )

    def pad_batch(self, prompts: Sequence[SplicedPrompt]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-pad prompts into ``inputs_embeds`` (zeros) and an attention mask.

        Returns:
            ``(B, L, H)`` embeddings and ``(B, L)`` mask (0 on padding).
        """
        longest = max(p.embeds.shape[0] for p in prompts)
        hidden = prompts[0].embeds.shape[1]
        embeds = prompts[0].embeds.new_zeros(len(prompts), longest, hidden)
        mask = torch.zeros(len(prompts), longest, dtype=torch.long, device=embeds.device)
        for row, prompt in enumerate(prompts):
            length = prompt.embeds.shape[0]
            embeds[row, longest - length :] = prompt.embeds
            mask[row, longest - length :] = 1
        return embeds, mask
