"""`m3 chat`: ask a VLM about a scan; it calls expert models as it needs them.

With a PROMPT it answers once; without, it opens an interactive session that
keeps the conversation history. Tokens stream to the terminal; expert calls
and the files they wrote are reported on stderr; ``--json`` prints the whole
trace instead.
"""

from __future__ import annotations

import inspect
import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from medm3.cli.options import mock_script_option, trust_bundle_code_option, weights_option
from medm3.errors import InputError

#: Input names an image may carry (``--image t1ce=a.nii.gz``).
NAMED_INPUTS = ("image", "t1ce", "t1", "t2", "flair")


def _backend_options(cls: type, **candidates: Any) -> dict[str, Any]:
    """Keep the options the backend's constructor accepts and that were given."""
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in candidates.items() if v is not None and k in params}


def _load_images(tokens: tuple[str, ...], modality: str | None, series: str | None) -> Any:
    from medm3.cli.experts import _parse_images
    from medm3.imaging.io import load_image

    parsed = _parse_images(tokens, NAMED_INPUTS)
    if not parsed:
        return None
    if parsed[0][0] is None:
        if len(parsed) > 1:
            raise InputError(
                "several --image options need names, e.g. --image t1ce=a.nii.gz --image t1=b.nii.gz"
            )
        image = load_image(parsed[0][1], modality, series=series)
        if (modality or "").strip().upper() == "CXR":  # the user says: a chest X-ray
            image.metadata.setdefault("body_part", "CHEST")
        return image
    # Named BraTS sequences are MR unless told otherwise.
    return {name: load_image(path, modality or "MR", series=series) for name, path in parsed}


def _probability_lines(result: dict[str, Any]) -> list[str]:
    """``Effusion: yes (p = 0.73)`` lines of a classification step's result (for people).

    The model is fed the protocol's yes/no text; only this progress display
    adds the probabilities, as ``m3 experts run cxr`` does.
    """
    if not result.get("probabilities"):
        return []
    from medm3.experts.base import ExpertResult
    from medm3.experts.output import probability_lines

    shown = ExpertResult(
        expert=str(result.get("expert", "")),
        args=str(result.get("args", "")),
        text="",
        probabilities=dict(result["probabilities"]),
        findings=dict(result.get("findings") or {}),
    )
    return probability_lines(shown)


def _event_printer(json_mode: bool) -> Any:
    def show(step: dict[str, Any]) -> None:
        if json_mode:
            return
        kind = step["step"]
        if kind == "expert":
            cache = step["result"]["info"].get("cache", "")
            note = " (cached)" if cache in ("hit", "derived") else ""
            click.echo(
                f"\n[expert {step['trigger']} done in {step['seconds']:.1f} s{note}]", err=True
            )
            for line in _probability_lines(step["result"]):
                click.echo(f"  {line}", err=True)
            for path in step["files"]:
                click.echo(f"  wrote {path}", err=True)
        elif kind == "expert_error":
            click.echo(f"\n[expert call rejected: {step['message']}]", err=True)
        elif kind == "expert_repeat":
            click.echo(f"\n[{step['trigger']} was already run for this question]", err=True)
        elif kind == "expert_unavailable":
            click.echo(f"\n[expert {step['trigger']} is not available]", err=True)
        elif kind == "round_limit":
            click.echo(f"\n[stopped after {step['max_rounds']} expert calls]", err=True)

    return show


@click.command("chat")
@click.argument("prompt", required=False)
@click.option(
    "--model", default=None, help="Hub id or local folder (default: VILA-M3 8B on CUDA, 3B on CPU)."
)
@click.option(
    "--backend", default="vila", show_default=True, help="vila, hf, openai, mock (or a plugin)."
)
@click.option(
    "--image",
    "images",
    multiple=True,
    metavar="PATH",
    help="Scan to discuss (repeat as t1ce=, t1=, t2=, flair= for the four BraTS sequences).",
)
@click.option(
    "--modality",
    default=None,
    help="Override the image modality (CT, MR, XR ...; CXR: an X-ray known to show a chest).",
)
@click.option("--series", default=None, help="DICOM series to use when a folder holds several.")
@click.option(
    "--mask",
    type=click.Path(path_type=Path),
    default=None,
    help="Your label map on the image's grid: what MEASURE measures.",
)
@click.option(
    "--labels",
    default=None,
    metavar="NAME|FILE",
    help="Names of the --mask labels: totalseg-ct, totalseg-mr, vista3d, brats or a JSON "
    "file (default: from the file's header or the table its ids fit).",
)
@weights_option
@mock_script_option
@click.option(
    "--slice", "slice_index", type=int, default=None, help="Slice the VLM sees (volumes)."
)
@click.option(
    "--plane",
    type=click.Choice(["axial", "coronal", "sagittal"]),
    default="axial",
    show_default=True,
)
@click.option("--window", default="auto", show_default=True, help="Window of the VLM's view.")
@click.option("--no-experts", is_flag=True, help="Do not offer expert models to the VLM.")
@click.option("--experts", "expert_list", default=None, help="Comma-separated experts to offer.")
@click.option(
    "--protocol",
    metavar="[released|medm3]",
    default=None,
    help="How the agent talks to the model: released (the released VILA-M3 training "
    "conversations; default for --backend vila) or medm3 (MEASURE, chained calls; default "
    "for the others). See docs/fidelity.md.",
)
@click.option(
    "--max-rounds",
    type=click.IntRange(0, 10),
    default=3,
    show_default=True,
    help="Most expert calls per question (protocol released: at most 1).",
)
@click.option("--max-new-tokens", type=click.IntRange(1, 8192), default=1024, show_default=True)
@click.option("--temperature", type=click.FloatRange(0, 2), default=0.0, show_default=True)
@click.option("--device", default=None, help="Device for the VLM (auto, cpu, cuda).")
@click.option(
    "--dtype", default=None, help="VLM precision: fp16, bf16 or fp32 (default by device)."
)
@click.option(
    "--template", default=None, help="VILA chat template: llama_3 or vicuna_v1 (default: detected)."
)
@click.option("--expert-device", default=None, help="Device for the experts (default: automatic).")
@click.option("--base-url", default=None, help="OpenAI-compatible server URL (backend openai).")
@click.option(
    "--api-key", default=None, help="API key (backend openai; else from the environment)."
)
@click.option(
    "-o",
    "--output",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder for the VLM's views, expert overlays, label maps and results (default: a "
    "new run folder chat-TIME under $MEDM3_DATA_DIR/chat, else the platform's user data "
    "folder, medm3/chat; never the current folder).",
)
@click.option("--no-cache", is_flag=True, help="Do not use the expert result cache.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print the answer and the whole trace as JSON."
)
@click.option(
    "--store",
    is_flag=True,
    help="With PROMPT and a DICOMweb image: store the last segmentation, its measurements, "
    "the question and the answer in the study (DICOM-SEG + SR, see docs/pacs.md).",
)
@trust_bundle_code_option
def chat(
    prompt: str | None,
    model: str | None,
    backend: str,
    images: tuple[str, ...],
    modality: str | None,
    series: str | None,
    mask: Path | None,
    labels: str | None,
    weights: tuple[str, ...],
    mock_script: Path | None,
    slice_index: int | None,
    plane: str,
    window: str,
    no_experts: bool,
    expert_list: str | None,
    protocol: str | None,
    max_rounds: int,
    max_new_tokens: int,
    temperature: float,
    device: str | None,
    dtype: str | None,
    template: str | None,
    expert_device: str | None,
    base_url: str | None,
    api_key: str | None,
    out_dir: Path | None,
    no_cache: bool,
    as_json: bool,
    store: bool,
) -> None:
    """Ask about a scan: the VLM answers, calling expert models when it needs them.

    \b
    Examples:
      m3 chat --image ct.nii.gz "Is there a liver lesion?"
      m3 chat --image cxr.dcm --backend openai --model my-vlm --base-url http://localhost:8000/v1
      m3 chat --image t1ce=a.nii.gz --image t1=b.nii.gz --image t2=c.nii.gz --image flair=d.nii.gz
      m3 chat --image ct.nii.gz --mask seg.nii.gz --labels totalseg-ct "Liver volume?"
      m3 chat --backend mock --mock-script replies.txt --image ct.nii.gz "Segment the liver"
    """
    from medm3.agent import AgentConfig, ChatSession
    from medm3.vlm.base import GenerationConfig
    from medm3.vlm.registry import BACKENDS, default_model

    if prompt is not None and not prompt.strip():
        raise InputError("the prompt is empty")
    if protocol is not None:
        from medm3.agent.protocol import get_protocol

        protocol = get_protocol(protocol).name
    backend_cls = BACKENDS.get(backend)
    experts = None
    if expert_list:
        from medm3.experts.registry import get_expert_class

        experts = tuple(
            get_expert_class(n.strip()).name for n in expert_list.split(",") if n.strip()
        )
    if mock_script is not None and backend != "mock":
        raise InputError("--mock-script needs --backend mock")
    from medm3.cli.options import parse_weights

    local_weights = parse_weights(weights)
    loaded = _load_images(images, modality, series)
    if mask is not None or labels is not None:
        loaded = _with_mask(loaded, mask, labels, as_json)
    if store:
        _check_store(prompt, loaded)
    if out_dir is None:
        out_dir = default_output_dir()
    config = AgentConfig(
        experts=experts,
        use_experts=not no_experts,
        max_rounds=max_rounds,
        plane=plane,
        slice_index=slice_index,
        window=window,
        device=expert_device,
        generation=GenerationConfig(max_new_tokens=max_new_tokens, temperature=temperature),
        output_dir=out_dir,
        use_cache=not no_cache,
        protocol=protocol,
        weights=local_weights,
    )
    model_id = model or ("mock" if backend == "mock" else default_model(backend))
    options = _backend_options(
        backend_cls,
        device=device,
        dtype=dtype,
        template=template,
        base_url=base_url,
        api_key=api_key,
        script_file=mock_script,
    )
    if backend == "mock" and mock_script is None:
        from medm3.vlm.mock import echo_reply

        options["script"] = echo_reply
    vlm = backend_cls(model_id, **options)
    session = ChatSession(vlm, loaded, config, on_event=_event_printer(as_json))

    def stream(piece: str) -> None:
        click.echo(piece, nl=False)
        sys.stdout.flush()

    if prompt is not None:
        reply = session.ask(prompt, on_text=None if as_json else stream)
        stored = _store(reply, loaded, model_id, prompt) if store else []
        if as_json:
            doc = {
                "output_dir": str(out_dir),
                "stored": stored,
                "answer": reply.text,
                "rounds": reply.rounds,
                "round_limit_reached": reply.round_limit_reached,
                "files": reply.files,
                "model": model_id,
                "backend": backend,
                "protocol": reply.protocol,
                "trace": reply.trace,
            }
            click.echo(json.dumps(doc, indent=2, default=str))
        else:
            click.echo()
            for url in stored:
                click.echo(f"stored {url}", err=True)
            _say_where(out_dir)
        return
    _interactive(session, as_json, stream)
    if not as_json:
        _say_where(out_dir)


def default_output_dir() -> Path:
    """A new run folder for a chat's files, never in the current folder.

    ``$MEDM3_DATA_DIR/chat/chat-TIME`` when that variable is set (as for
    ``m3 serve``), else ``<platform user data folder>/medm3/chat/chat-TIME``
    (``~/.local/share/medm3/chat/...`` on Linux). Nothing is created here; a
    second run in the same second gets ``-2``, ``-3`` ...
    """
    import os

    from medm3.serve.settings import DATA_DIR_ENV

    raw = os.environ.get(DATA_DIR_ENV, "").strip()
    if raw:
        root = Path(raw).expanduser()
    else:
        from medm3.doctor import data_dir

        root = data_dir()
    base = root / "chat" / time.strftime("chat-%Y%m%d-%H%M%S")
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    return folder


def _say_where(out_dir: Path) -> None:
    """Tell where the run's files went (when it wrote any)."""
    if out_dir.is_dir():
        click.echo(f"files: {out_dir}", err=True)


def _with_mask(loaded: Any, mask: Path | None, labels: str | None, quiet: bool) -> Any:
    """Add the user's label map (``mask``, with label names) to a single image."""
    from medm3.imaging.io import load_image
    from medm3.imaging.label_tables import label_names_for

    if mask is None:
        raise InputError("--labels names the labels of --mask; give --mask too")
    if loaded is None or isinstance(loaded, dict):
        raise InputError("--mask goes with one --image (the scan it labels)")
    label_map = load_image(mask)
    if label_map.spatial_shape != loaded.spatial_shape:
        raise InputError(
            f"the mask's grid {label_map.spatial_shape} differs from the image's "
            f"{loaded.spatial_shape}",
            mask,
        )
    names, note = label_names_for(label_map, labels, modality=loaded.modality)
    label_map.metadata["label_names"] = names
    label_map.metadata["content"] = "label_map"
    if not quiet:
        click.echo(f"mask {mask}: {note}", err=True)
    return {"image": loaded, "mask": label_map}


def _check_store(prompt: str | None, loaded: Any) -> None:
    """--store needs one question and a DICOMweb image (checked before the model loads)."""
    from medm3.dicomweb.store import dicomweb_source

    if prompt is None:
        raise InputError("--store needs a PROMPT (it stores the answer to one question)")
    if loaded is None or isinstance(loaded, dict):
        raise InputError("--store needs one --image read from a DICOMweb server")
    dicomweb_source(loaded)


def _store(reply: Any, image: Any, model_id: str, question: str) -> list[str]:
    """Store the reply's last segmentation + measurements + Q/A; the stored instances' URLs."""
    from medm3.dicomweb.store import dicomweb_source, store_result

    result = next((r for r in reversed(reply.results) if r.label_map is not None), None)
    if result is None:
        raise InputError("--store: no expert segmented anything in this answer; nothing stored")
    origin = dicomweb_source(image)
    stored = store_result(result, image, vlm=model_id, question=question, answer=reply.text)
    base = f"dicomweb+{origin['root']}/studies/{origin['study_uid']}"
    return [f"{base}/series/{o.series_instance_uid}/instances/{o.sop_instance_uid}" for o in stored]


#: Interactive commands (the same with a terminal and with piped input).
COMMANDS = {
    "/help": "list these commands",
    "/files": "files written so far (views, overlays, label maps, results)",
    "/trace": "the last answer's trace as JSON",
    "/exit": "leave (also /quit, exit, quit, Ctrl-D)",
}


def _command(line: str, state: dict[str, Any]) -> bool:
    """Handle an interactive command; ``False`` means leave. Never sent to the model."""
    word = line.split()[0].lower()
    if word in ("/exit", "/quit"):
        return False
    if word == "/help":
        for name, what in COMMANDS.items():
            click.echo(f"  {name:<8} {what}", err=True)
    elif word == "/files":
        for path in state["files"] or ["(none yet)"]:
            click.echo(f"  {path}", err=True)
    elif word == "/trace":
        click.echo(json.dumps(state["trace"], indent=2, default=str))
    else:
        click.echo(f"m3: error: unknown command {word}; /help lists them", err=True)
    return True


def _interactive(session: Any, as_json: bool, stream: Any) -> None:
    """Read questions until EOF, /exit or 'exit'; the history is kept.

    Lines starting with ``/`` are commands (:data:`COMMANDS`), handled the same
    whether stdin is a terminal or a pipe; they never reach the model.
    """
    interactive = sys.stdin.isatty()
    if interactive:
        click.echo("Ask about the scan (/help for commands, /exit or Ctrl-D to leave).", err=True)
    state: dict[str, Any] = {"files": [], "trace": []}
    while True:
        try:
            question = input("you> " if interactive else "")
        except EOFError:
            break
        text = question.strip()
        if text.lower() in ("exit", "quit"):
            break
        if not text:
            continue
        if text.startswith("/"):
            if not _command(text, state):
                break
            continue
        try:
            reply = session.ask(question, on_text=None if as_json else stream)
        except InputError as exc:  # e.g. a question that was only "<image>": say so, go on
            click.echo(f"m3: error: {exc.message}", err=True)
            continue
        state["trace"] = reply.trace
        state["files"].extend(
            f for step in reply.trace for f in step.get("files", []) if f not in state["files"]
        )
        if as_json:
            click.echo(json.dumps({"answer": reply.text, "trace": reply.trace}, default=str))
        else:
            click.echo()
