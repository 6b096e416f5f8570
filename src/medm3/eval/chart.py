"""Grouped bar charts for ``m3 eval report`` (matplotlib, or plain PIL drawing)."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["bars_matplotlib", "bars_pil", "has_matplotlib"]

#: Bar colours (ours first), RGB.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (214, 39, 40),
    (31, 119, 180),
    (44, 160, 44),
    (148, 103, 189),
    (255, 127, 14),
    (140, 86, 75),
    (127, 127, 127),
)

Series = Mapping[str, Sequence[float | None]]


def has_matplotlib() -> bool:
    """Whether matplotlib is installed."""
    return importlib.util.find_spec("matplotlib") is not None


def bars_matplotlib(labels: Sequence[str], series: Series, path: Path) -> None:
    """Draw with matplotlib's object API (no pyplot, no global backend change).

    Args:
        labels: One label per group (task / metric).
        series: Name -> one value per group (``None``: no bar).
        path: Output PNG.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n, k = len(labels), max(1, len(series))
    fig = Figure(figsize=(max(6.0, 1.1 * n * (k + 1) / 2), 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / k
    for j, (name, values) in enumerate(series.items()):
        xs = [i - 0.4 + width * (j + 0.5) for i, v in enumerate(values) if v is not None]
        ys = [v for v in values if v is not None]
        color = tuple(c / 255 for c in PALETTE[j % len(PALETTE)])
        ax.bar(xs, ys, width=width, label=name, color=color)
    ax.set_xticks(range(n))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, ncol=min(4, k))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")


def bars_pil(labels: Sequence[str], series: Series, path: Path) -> None:
    """Draw the same chart with PIL only (fallback without matplotlib).

    Args:
        labels: One label per group.
        series: Name -> one value per group (``None``: no bar).
        path: Output PNG.
    """
    from PIL import Image, ImageDraw

    n, k = max(1, len(labels)), max(1, len(series))
    group = 24 * k + 30
    left, top, bottom, plot_h = 50, 20 + 16 * ((k + 3) // 4), 50, 300
    width = max(left + group * n + 20, left + 160 * min(4, k) + 20)
    img = Image.new("RGB", (width, top + plot_h + bottom), "white")
    draw = ImageDraw.Draw(img)
    base = top + plot_h
    for tick in range(0, 101, 20):
        y = base - plot_h * tick / 100
        draw.line([(left, y), (width - 10, y)], fill=(225, 225, 225))
        draw.text((5, y - 6), f"{tick}", fill="black")
    for j, (name, values) in enumerate(series.items()):
        color = PALETTE[j % len(PALETTE)]
        for i, v in enumerate(values):
            if v is None:
                continue
            x0 = left + group * i + 15 + 24 * j
            draw.rectangle([x0, base - plot_h * min(v, 100) / 100, x0 + 20, base], fill=color)
        lx, ly = left + 160 * (j % 4), 4 + 16 * (j // 4)
        draw.rectangle([lx, ly + 2, lx + 10, ly + 12], fill=color)
        draw.text((lx + 14, ly), name, fill="black")
    draw.line([(left, base), (width - 10, base)], fill="black")
    for i, label in enumerate(labels):
        for row, part in enumerate(label.split("\n")):
            draw.text((left + group * i + 5, base + 5 + 14 * row), part[:22], fill="black")
    img.save(path, format="PNG")
