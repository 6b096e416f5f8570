"""``m3 eval report``: our scores beside the published ones, as markdown and a PNG chart.

Every row names its protocol; a published number scored under another
protocol is marked ``†`` (not comparable), and a partial run (``--limit``) or a
run with overridden decoding settings is marked ``*``. The chart is drawn with
matplotlib when installed, else with PIL.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medm3.errors import InputError
from medm3.eval.published import MODEL_ORDER, PROTOCOL_NOTES, Published, lookup
from medm3.eval.runner import RUN_LOG
from medm3.eval.tasks import PROTOCOLS
from medm3.utils.atomic import atomic_path
from medm3.utils.jsonio import read_json

__all__ = ["ReportRow", "build_rows", "load_run", "markdown", "write_chart"]

#: Metrics shown per task kind and protocol, in order.
SHOWN_METRICS: dict[str, tuple[str, ...]] = {
    "vila-m3/vqa": ("accuracy",),
    "llava-med/vqa": ("closed", "open_recall"),
    "report": ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider", "green"),
    "classification": ("f1_macro",),
}
_KIND = {
    "mimic-cxr-report": "report",
    "chexpert-cls": "classification",
    "cxr14-cls": "classification",
}


@dataclass
class ReportRow:
    """One line of the table: one metric of one run.

    Attributes:
        task: Task name.
        title: Task title.
        protocol: Protocol of the run.
        experts: Expert setting (``None`` where not applicable).
        metric: Metric key.
        ours: Our value (percent) or ``None`` (unavailable).
        model: Our model id.
        n: Samples scored.
        partial: Why the run is not the full protocol (empty when it is).
        unavailable: Why ``ours`` is missing.
        published: Published numbers for this row, by model.
    """

    task: str
    title: str
    protocol: str
    experts: bool | None
    metric: str
    ours: float | None
    model: str
    n: int
    partial: str = ""
    unavailable: str = ""
    published: dict[str, Published] = field(default_factory=dict)


def load_run(path: str | Path) -> dict[str, Any]:
    """The log of a finished run (a run folder or its ``run.json``).

    Raises:
        InputError: No log (run unfinished?) or not a medm3 eval log.
    """
    p = Path(path).expanduser()
    log_path = p / RUN_LOG if p.is_dir() else p
    if not log_path.is_file():
        hint = " (the run has not finished: rerun `m3 eval run` to resume)" if p.is_dir() else ""
        raise InputError(f"no {RUN_LOG} found{hint}", p)
    log = read_json(log_path, what="the run log")
    if not isinstance(log, dict) or "medm3_eval_log" not in log:
        raise InputError("not an m3 eval run log", log_path)
    return log


def _kind(log: dict[str, Any]) -> str:
    kind = _KIND.get(log["task"], "vqa")
    return f"{log['protocol']}/vqa" if kind == "vqa" else kind


def _short_model(model_id: str) -> str:
    """Hub ids as they are; local folders by their name."""
    is_path = model_id.startswith(("/", ".", "~")) or model_id.count("/") > 1
    return Path(model_id).name or model_id if is_path else model_id


def _count(metrics: dict[str, Any], metric: str, log: dict[str, Any]) -> int:
    key = {"closed": "n_closed", "closed_legacy": "n_closed", "open_recall": "n_open"}.get(
        metric, "n"
    )
    return int(metrics.get(key, log.get("n_samples", 0)) or 0)


def build_rows(logs: Sequence[dict[str, Any]]) -> list[ReportRow]:
    """Table rows for run logs, in the order given.

    Args:
        logs: Outputs of :func:`load_run`.
    """
    rows = []
    for log in logs:
        metrics = log.get("metrics", {})
        experts = log.get("experts") if _KIND.get(log["task"]) == "classification" else None
        partial = []
        limit = log.get("config", {}).get("limit")
        kept = log.get("data", {}).get("kept")
        if limit is not None and kept is not None and limit < kept:
            partial.append(f"--limit {limit} of {kept}")
        partial += [f"{k} overridden" for k in log.get("protocol_overrides", {})]
        unavailable = metrics.get("unavailable") or {}
        for metric in SHOWN_METRICS.get(_kind(log), (log.get("primary_metric", ""),)):
            value = metrics.get(metric)
            rows.append(
                ReportRow(
                    task=log["task"],
                    title=log.get("title", log["task"]),
                    protocol=log["protocol"],
                    experts=experts,
                    metric=metric,
                    ours=None if value is None else float(value),
                    model=_short_model(str(log.get("model", {}).get("model_id", "?"))),
                    n=_count(metrics, metric, log),
                    partial="; ".join(partial),
                    unavailable=str(unavailable.get(metric, "")),
                    published={p.model: p for p in lookup(log["task"], metric, experts)},
                )
            )
    return rows


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def markdown(rows: Sequence[ReportRow]) -> str:
    """The comparison table as markdown, with the protocol legend and footnotes.

    Args:
        rows: Output of :func:`build_rows`.
    """
    models = [m for m in MODEL_ORDER if any(m in r.published for r in rows)]
    header = ["Task", "Protocol", "Metric", "n", "Ours", *models]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    other_protocols: set[str] = set()
    starred = unavailable = False
    for r in rows:
        task = r.title + ("" if r.experts is None else f" ({'with' if r.experts else 'no'} expert)")
        ours = _fmt(r.ours)
        if r.ours is None and r.unavailable:
            unavailable = True
            ours += "‡"
        if r.partial:
            starred = True
            ours += "*"
        cells = [task, r.protocol, r.metric, str(r.n), f"{ours} ({r.model})"]
        for m in models:
            p = r.published.get(m)
            if p is None:
                cells.append("—")
            elif p.protocol != r.protocol:
                other_protocols.add(p.protocol)
                cells.append(f"{p.value:.1f}†")
            else:
                cells.append(f"{p.value:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    used = sorted({r.protocol for r in rows})
    lines += [f"- protocol `{p}`: {PROTOCOLS.get(p, '')}" for p in used]
    if other_protocols:
        names = ", ".join(
            f"`{p}` ({PROTOCOL_NOTES.get(p) or PROTOCOLS.get(p, '')})"
            for p in sorted(other_protocols)
        )
        lines.append(f"- † published under another protocol, not directly comparable: {names}")
    if starred:
        notes = sorted({f"{r.title}: {r.partial}" for r in rows if r.partial})
        lines.append("- * not the full protocol: " + "; ".join(notes))
    if unavailable:
        notes = sorted(
            {f"{r.metric}: {r.unavailable}" for r in rows if r.ours is None and r.unavailable}
        )
        lines.append("- ‡ unavailable here: " + "; ".join(notes))
    lines.append("- all values in percent")
    return "\n".join(lines) + "\n"


def _series(rows: Sequence[ReportRow]) -> tuple[list[str], dict[str, list[float | None]]]:
    labels = [
        f"{r.task}{'' if r.experts is None else ('+exp' if r.experts else '')}\n"
        f"{r.metric} [{r.protocol}]\n{r.model}"
        for r in rows
    ]
    series: dict[str, list[float | None]] = {"ours": [r.ours for r in rows]}
    for m in MODEL_ORDER:
        values = [r.published[m].value if m in r.published else None for r in rows]
        if any(v is not None for v in values):
            series[m] = values
    return labels, series


def write_chart(rows: Sequence[ReportRow], path: str | Path, *, engine: str = "auto") -> Path:
    """Grouped bar chart of ours vs the published numbers, as PNG (written atomically).

    Args:
        rows: Output of :func:`build_rows`.
        path: Destination ``.png``.
        engine: ``matplotlib``, ``pil`` or ``auto`` (matplotlib when installed).

    Returns:
        The written file.
    """
    from medm3.eval import chart

    labels, series = _series(rows)
    use_mpl = engine == "matplotlib" or (engine == "auto" and chart.has_matplotlib())
    out = Path(path).expanduser()
    with atomic_path(out) as tmp:
        if use_mpl:
            chart.bars_matplotlib(labels, series, tmp)
        else:
            chart.bars_pil(labels, series, tmp)
    return out
