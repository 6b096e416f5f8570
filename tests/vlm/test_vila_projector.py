"""The mlp_downsample projector against the spec (padding, channel order, token order)."""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from medm3.errors import InputError  # noqa: E402
from medm3.vlm.vila.projector import MlpDownsampleProjector, downsample_tokens  # noqa: E402


def reference_downsample(x: torch.Tensor) -> torch.Tensor:
    """The spec written as loops: pad rows then columns, concat 2x2, column-pair-major."""
    b, n, c = x.shape
    s = math.isqrt(n)
    rows = [[x[:, r * s + col] for col in range(s)] for r in range(s)]
    zero = x.new_zeros(b, c)
    if s % 2:
        rows.append([zero] * s)
        for row in rows:
            row.append(zero)
    size = len(rows)
    out = []
    for j in range(size // 2):  # outer loop: column pairs
        for i in range(size // 2):  # inner loop: row pairs
            out.append(
                torch.cat(
                    [
                        rows[2 * i][2 * j],
                        rows[2 * i][2 * j + 1],
                        rows[2 * i + 1][2 * j],
                        rows[2 * i + 1][2 * j + 1],
                    ],
                    dim=-1,
                )
            )
    return torch.stack(out, dim=1)


def test_spec_worked_example_3x3() -> None:
    grid = torch.arange(1, 10, dtype=torch.float32).reshape(1, 9, 1)
    out = downsample_tokens(grid)
    assert out[0].tolist() == [[1, 2, 4, 5], [7, 8, 0, 0], [3, 0, 6, 0], [9, 0, 0, 0]]


@pytest.mark.parametrize("side", [2, 3, 4, 7, 27])
def test_downsample_matches_loop_reference(side: int) -> None:
    x = torch.randn(2, side * side, 5)
    out = downsample_tokens(x)
    assert out.shape == (2, math.ceil(side / 2) ** 2, 20)
    assert torch.equal(out, reference_downsample(x))


def test_odd_7x7_grid_gives_16_tokens_with_zero_padding() -> None:
    x = torch.arange(1, 50, dtype=torch.float32).reshape(1, 49, 1)
    out = downsample_tokens(x)[0]
    assert out.shape == (16, 4)
    # Token index j*4 + i covers rows 2i..2i+1, columns 2j..2j+1 (value = r*7 + c + 1).
    assert out[0].tolist() == [1, 2, 8, 9]
    assert out[1].tolist() == [15, 16, 22, 23]  # i=1 (next row pair), j=0
    assert out[3].tolist() == [43, 44, 0, 0]  # last row pair: padded row 7
    assert out[12].tolist() == [7, 0, 14, 0]  # last column pair: padded column 7
    assert out[15].tolist() == [49, 0, 0, 0]


def test_non_square_grid_is_rejected() -> None:
    with pytest.raises(ValueError, match="square"):
        downsample_tokens(torch.zeros(1, 10, 3))


def test_projector_layers_match_manual_computation(tmp_path) -> None:
    from safetensors.torch import save_file

    c, h = 6, 8
    state = {
        "layers.1.weight": torch.randn(4 * c),
        "layers.1.bias": torch.randn(4 * c),
        "layers.2.weight": torch.randn(h, 4 * c),
        "layers.2.bias": torch.randn(h),
        "layers.4.weight": torch.randn(h, h),
        "layers.4.bias": torch.randn(h),
    }
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "v2l_projector", "mm_projector_type": "mlp_downsample"})
    )
    projector = MlpDownsampleProjector.from_folder(tmp_path, c, h)
    x = torch.randn(3, 49, c)
    y = reference_downsample(x)
    y = torch.nn.functional.layer_norm(
        y, (4 * c,), state["layers.1.weight"], state["layers.1.bias"], eps=1e-5
    )
    y = y @ state["layers.2.weight"].T + state["layers.2.bias"]
    y = 0.5 * y * (1 + torch.erf(y / math.sqrt(2)))  # exact GELU
    y = y @ state["layers.4.weight"].T + state["layers.4.bias"]
    with torch.no_grad():
        out = projector(x)
    assert out.shape == (3, 16, h)
    torch.testing.assert_close(out, y)


def test_projector_type_and_weight_errors(tmp_path) -> None:
    from safetensors.torch import save_file

    (tmp_path / "config.json").write_text(json.dumps({"mm_projector_type": "mlp2x_gelu"}))
    with pytest.raises(InputError, match="unsupported mm_projector_type 'mlp2x_gelu'"):
        MlpDownsampleProjector.from_folder(tmp_path, 4, 8)
    (tmp_path / "config.json").write_text(json.dumps({"mm_projector_type": "mlp_downsample"}))
    with pytest.raises(InputError, match=r"missing model\.safetensors"):
        MlpDownsampleProjector.from_folder(tmp_path, 4, 8)
    save_file({"layers.1.weight": torch.ones(3)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(InputError, match="do not match"):
        MlpDownsampleProjector.from_folder(tmp_path, 4, 8)
