"""The VILA1.5 ``mlp_downsample`` projector (vision features -> LLM embeddings).

``layers.0`` is the parameter-free 2x2 downsample, then ``layers.1`` LayerNorm
(4C, eps 1e-5), ``layers.2`` Linear(4C, H), ``layers.3`` exact (erf) GELU,
``layers.4`` Linear(H, H): the names match the keys of the released
``mm_projector/model.safetensors``.

The downsample follows the VILA1.5 code the VILA-M3 weights were trained with,
not the later NVILA one of the same name: odd grids are zero-padded (a row at
the bottom, then a column at the right) and output tokens come out
column-pair-major (``index = j * R/2 + i``).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from medm3.errors import InputError

PROJECTOR_TYPE = "mlp_downsample"


def downsample_tokens(x: torch.Tensor) -> torch.Tensor:
    """Merge each 2x2 block of the square token grid into one token of 4x the channels.

    Args:
        x: ``(B, N, C)`` vision tokens, ``N = S*S`` in row-major grid order.

    Returns:
        ``(B, ceil(S/2)**2, 4C)``. Each output token concatenates ``x[2i,2j]``,
        ``x[2i,2j+1]``, ``x[2i+1,2j]``, ``x[2i+1,2j+1]`` (zeros where the odd
        grid was padded); tokens are ordered column-pair-major.

    Raises:
        ValueError: ``N`` is not a perfect square.
    """
    b, n, c = x.shape
    s = math.isqrt(n)
    if s * s != n:
        raise ValueError(f"mlp_downsample needs a square token grid, got {n} tokens")
    grid = x.reshape(b, s, s, c)
    if s % 2:  # a zero row at the bottom, then a zero column at the right
        grid = torch.cat([grid, grid.new_zeros(b, 1, s, c)], dim=1)
        grid = torch.cat([grid, grid.new_zeros(b, s + 1, 1, c)], dim=2)
    rows, cols = grid.shape[1], grid.shape[2]
    # Pair columns: (B, R, C/2, 2C) holds [x[r,2j], x[r,2j+1]].
    grid = grid.reshape(b, rows, cols // 2, 2 * c)
    # Column-pair-major: (B, C/2, R, 2C), then pair rows -> (B, C/2, R/2, 4C)
    # holding [x[2i,2j], x[2i,2j+1], x[2i+1,2j], x[2i+1,2j+1]].
    grid = grid.permute(0, 2, 1, 3).reshape(b, cols // 2, rows // 2, 4 * c)
    return grid.reshape(b, (cols // 2) * (rows // 2), 4 * c)


class DownSample(nn.Module):
    """Parameter-free 2x2 token merge (``layers.0``); see :func:`downsample_tokens`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply :func:`downsample_tokens`."""
        return downsample_tokens(x)


class MlpDownsampleProjector(nn.Module):
    """``mlp_downsample``: downsample -> LayerNorm -> Linear -> GELU -> Linear.

    Args:
        vision_hidden: Width ``C`` of the vision features (``mm_hidden_size``).
        llm_hidden: Width ``H`` of the LLM embeddings.
    """

    def __init__(self, vision_hidden: int, llm_hidden: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            DownSample(),
            nn.LayerNorm(4 * vision_hidden, eps=1e-5),
            nn.Linear(4 * vision_hidden, llm_hidden),
            nn.GELU(approximate="none"),
            nn.Linear(llm_hidden, llm_hidden),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project ``(B, N, C)`` vision tokens to ``(B, ceil(sqrt(N)/2)**2, H)``."""
        return self.layers(x)

    @classmethod
    def from_folder(
        cls, folder: Path, vision_hidden: int, llm_hidden: int
    ) -> MlpDownsampleProjector:
        """Load ``mm_projector/`` (``config.json`` + ``model.safetensors``).

        Raises:
            InputError: Unsupported projector type, missing file or mismatched weights.
        """
        from safetensors.torch import load_file

        from medm3.utils.jsonio import read_json

        config = read_json(folder / "config.json", expect=dict)
        kind = config.get("mm_projector_type")
        if kind != PROJECTOR_TYPE:
            raise InputError(
                f"unsupported mm_projector_type {kind!r} (only {PROJECTOR_TYPE!r}, the one of "
                "the released VILA-M3 checkpoints, is implemented)",
                folder / "config.json",
            )
        weights = folder / "model.safetensors"
        if not weights.is_file():
            raise InputError("missing model.safetensors in the projector folder", folder)
        projector = cls(vision_hidden, llm_hidden)
        state = load_file(str(weights))
        try:
            projector.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0:3]
            raise InputError(
                f"projector weights do not match mm_hidden_size={vision_hidden}, "
                f"hidden_size={llm_hidden}: {' '.join(line.strip() for line in first)}",
                weights,
            ) from None
        return projector
