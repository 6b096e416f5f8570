"""`m3 eval`: run a model on medical benchmarks under a named scoring protocol.

* ``m3 eval list`` -- tasks and their protocols.
* ``m3 eval run TASK --model M --data PATH -o RUN_DIR`` -- batched, resumable run;
  writes ``predictions.jsonl`` and the ``run.json`` log; rerun to resume.
* ``m3 eval score --protocol P --answers GT.json --predictions PRED.jsonl`` -- score
  an existing LLaVA-Med-style answer file.
* ``m3 eval report RUN_DIR... [-o chart.png]`` -- ours beside the published numbers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from medm3.cli.options import expert_device_option, model_options
from medm3.errors import InputError
from medm3.executors.cli import executor_options

_PROTOCOL_NAMES = ("vila-m3", "llava-med")


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


@click.group("eval")
def eval_group() -> None:
    """Evaluate a VLM on medical benchmarks; every number names its protocol."""


@eval_group.command("list")
def list_tasks() -> None:
    """List the tasks, their protocols and headline metrics."""
    from medm3.eval.tasks import TASKS

    click.echo(f"{'TASK':<18} {'PROTOCOLS':<20} {'EXPERTS':<8} HEADLINE")
    for name in TASKS.names():
        task = TASKS.get(name)
        experts = "on/off" if task.supports_experts else "-"
        headline = "/".join(dict.fromkeys(task.primary_metric(p) for p in task.protocols))
        click.echo(f"{name:<18} {','.join(task.protocols):<20} {experts:<8} {headline}")


@eval_group.command("run")
@click.argument("task")
@model_options
@click.option(
    "--data",
    required=True,
    type=click.Path(path_type=Path),
    help="Test data: a file (JSON, JSONL, CSV, Parquet) or its folder.",
)
@click.option(
    "-o",
    "--output",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="Run folder (new, or a previous run of the same config to resume).",
)
@click.option("--protocol", type=click.Choice(_PROTOCOL_NAMES), default=None, help="Scoring.")
@click.option("--limit", type=int, default=None, help="Evaluate only the first N samples.")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option(
    "--experts",
    type=click.Choice(["on", "off"]),
    default="off",
    show_default=True,
    help="Classification: give the CXR expert's findings before the question.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of sampled decoding.")
@click.option("--max-new-tokens", type=int, default=None, help="Override the protocol's budget.")
@click.option(
    "--image-folder", type=click.Path(path_type=Path), default=None, help="Folder of the images."
)
@click.option("--dtype", default=None, help="VLM dtype (bfloat16, float16, float32, auto).")
@click.option("--api-key", default=None, help="API key (backend openai).")
@expert_device_option
@click.option(
    "--judges/--no-judges",
    default=True,
    show_default=True,
    help="Report task: compute GREEN / RadGraph-F1 when installed.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@executor_options
def run(
    task: str,
    model: str | None,
    backend: str,
    data: Path,
    out_dir: Path,
    protocol: str | None,
    limit: int | None,
    batch_size: int,
    experts: str,
    seed: int,
    max_new_tokens: int | None,
    image_folder: Path | None,
    device: str | None,
    dtype: str | None,
    expert_device: str | None,
    base_url: str | None,
    api_key: str | None,
    judges: bool,
    quiet: bool,
    as_json: bool,
    **executor_kwargs: Any,
) -> None:
    """Run TASK, score it, and write predictions.jsonl + run.json to the run folder.

    \b
    Examples:
      m3 eval run vqa-rad --data vqa_rad/test.json -o runs/vqarad-8b
      m3 eval run slake --protocol llava-med --data slake/ -o runs/slake --limit 100
      m3 eval run chexpert-cls --experts on --data chexlocalize/groundtruth.csv -o runs/chx
      m3 eval run slake --data slake/ -o runs/slake --executor ray --gpus-per-worker 1
    """
    from medm3.cli.backends import backend_options
    from medm3.eval.runner import prepare
    from medm3.executors.cli import spec_from_options
    from medm3.vlm.registry import BACKENDS, default_model

    executor_spec = spec_from_options(executor_kwargs)
    model_id = model or default_model(backend)
    backend_cls = BACKENDS.get(backend)
    prepared = prepare(
        task,
        data,
        out_dir,
        backend=backend_cls.name if hasattr(backend_cls, "name") else backend,
        model=model_id,
        protocol=protocol,
        experts=experts == "on",
        limit=limit,
        batch_size=batch_size,
        seed=seed,
        max_new_tokens=max_new_tokens,
        image_root=image_folder,
        judges=judges,
    )
    expert = _cxr_expert(expert_device) if prepared.experts else None
    options = backend_options(
        backend_cls,
        device=device,
        dtype=dtype,
        batch_size=batch_size,
        base_url=base_url,
        api_key=api_key,
    )
    if executor_spec.kind == "local":
        result = _run_local(prepared, backend, model_id, options, expert, quiet=quiet)
    else:
        from medm3.eval.generate import BackendRef

        name = getattr(backend_cls, "name", None) or backend
        ref = BackendRef(name, model_id, options, expert_device, key=backend)
        result = _run_remote(prepared, executor_spec, ref, quiet=quiet)
    _print_result(result, as_json)


def _cxr_expert(device: str | None) -> Any:
    """The CXR expert of ``--experts on``; missing weights fail before anything is written."""
    from medm3.experts.registry import get_expert

    expert = get_expert("cxr", device=device)
    expert.weights_folder()
    return expert


def _interrupted(out_dir: Path) -> NoReturn:
    click.echo(
        f"\nm3: interrupted; the predictions so far are in {out_dir}: "
        "run the same command again to resume",
        err=True,
    )
    sys.exit(130)


def _run_local(
    prepared: Any,
    backend: str,
    model_id: str,
    options: dict[str, Any],
    expert: Any,
    *,
    quiet: bool,
) -> Any:
    """Load the backend here and run the prepared evaluation; its result."""
    from medm3.eval.runner import execute
    from medm3.vlm.registry import load_backend

    vlm = load_backend(backend, model_id, **options)
    try:
        return execute(prepared, vlm, expert=expert, progress=not quiet)
    except KeyboardInterrupt:
        _interrupted(prepared.out_dir)
    finally:
        vlm.close()


def _run_remote(prepared: Any, spec: Any, ref: Any, *, quiet: bool) -> Any:
    """``--executor ray``: each worker loads the backend (``ref``) once; the driver writes."""
    from medm3.eval.runner import execute
    from medm3.executors import make_executor

    with make_executor(spec) as executor:
        try:
            return execute(prepared, ref, progress=not quiet, executor=executor)
        except KeyboardInterrupt:
            _interrupted(prepared.out_dir)


def _print_result(result: Any, as_json: bool) -> None:
    if as_json:
        payload = {
            "task": result.task,
            "protocol": result.protocol,
            "experts": result.experts,
            "primary_metric": result.primary_metric,
            "metrics": result.metrics,
            "n_samples": result.n_samples,
            "n_generated": result.n_generated,
            "log": str(result.log_path),
            "notes": result.notes,
        }
        click.echo(json.dumps(payload, indent=1))
        return
    click.echo(
        f"{result.task} [protocol {result.protocol}] "
        f"{result.primary_metric} = {_fmt(result.metrics.get(result.primary_metric))} "
        f"(n={result.n_samples}, {result.n_generated} generated now)"
    )
    for name, value in result.metrics.items():
        if name != result.primary_metric and not isinstance(value, dict):
            click.echo(f"  {name}: {_fmt(value)}")
    for note in result.notes:
        click.echo(f"  note: {note}")
    click.echo(f"log: {result.log_path}")


@eval_group.command("score")
@click.option("--protocol", type=click.Choice(_PROTOCOL_NAMES), required=True)
@click.option(
    "--answers",
    "answers",
    required=True,
    type=click.Path(path_type=Path),
    help="Ground truth: LLaVA-style JSON/JSONL (id, conversations, answer_type).",
)
@click.option(
    "--predictions",
    required=True,
    type=click.Path(path_type=Path),
    help="Predictions JSONL with question_id and text (as LLaVA-Med writes them).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
def score(protocol: str, answers: Path, predictions: Path, as_json: bool) -> None:
    """Score a predictions file against ground truth under a protocol."""
    from medm3.eval.datasets import load_references
    from medm3.eval.predictions import predictions_by_id, read_predictions
    from medm3.eval.scorers import llava_med, vila_m3
    from medm3.eval.tasks import PROTOCOLS

    if not predictions.is_file():
        raise InputError("predictions file not found", predictions)
    refs = load_references(answers, protocol)
    preds = predictions_by_id(read_predictions(predictions), predictions)
    scorer = llava_med if protocol == "llava-med" else vila_m3
    result = scorer.score(refs, preds)
    extra = len(set(preds) - {r.id for r in refs})
    notes = [*result.notes]
    if extra:
        notes.append(f"{extra} prediction(s) for ids not in the ground truth ignored")
    if as_json:
        payload = {"protocol": protocol, "metrics": result.metrics, "notes": notes}
        click.echo(json.dumps(payload, indent=1))
        return
    click.echo(f"protocol {protocol}: {PROTOCOLS[protocol]}")
    for name, value in result.metrics.items():
        click.echo(f"  {name}: {_fmt(value)}")
    for note in notes:
        click.echo(f"  note: {note}")


@eval_group.command("report")
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    "chart",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write a PNG bar chart here.",
)
def report(run_dirs: tuple[Path, ...], chart: Path | None) -> None:
    """Print a markdown table of the runs beside the published numbers."""
    from medm3.eval.report import build_rows, load_run, markdown, write_chart

    if chart is not None and chart.suffix.lower() != ".png":
        raise InputError("the chart is written as PNG: give a .png path", chart)
    rows = build_rows([load_run(d) for d in run_dirs])
    text = markdown(rows)
    if chart is not None:
        write_chart(rows, chart)
    click.echo(text, nl=False)
    if chart is not None:
        click.echo(f"chart: {chart}", err=True)
