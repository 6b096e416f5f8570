"""`m3 chat`: ask a VLM about a scan; it calls expert models as it needs them.

With a PROMPT it answers once; without, it opens an interactive session that
keeps the conversation history. Tokens stream to the terminal; expert calls
and the files they wrote are reported on stderr; ``--json`` prints the whole
trace instead.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from medm3.cli.chat_interactive import interactive, say_where
from medm3.cli.options import (
    agent_options,
    allow_gaps_option,
    mock_script_option,
    model_options,
    output_folder_option,
    trust_bundle_code_option,
    weights_option,
)
from medm3.errors import InputError

if TYPE_CHECKING:
    from medm3.agent import AgentConfig

#: Input names an image may carry (``--image t1ce=a.nii.gz``).
NAMED_INPUTS = ("image", "t1ce", "t1", "t2", "flair")


def _load_images(tokens: tuple[str, ...], modality: str | None, series: str | None) -> Any:
    from medm3.cli.experts_run import parse_images
    from medm3.imaging.io import load_image

    parsed = parse_images(tokens, NAMED_INPUTS)
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
@model_options
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
@agent_options
@click.option("--temperature", type=click.FloatRange(0, 2), default=0.0, show_default=True)
@click.option(
    "--dtype", default=None, help="VLM precision: fp16, bf16 or fp32 (default by device)."
)
@click.option(
    "--template", default=None, help="VILA chat template: llama_3 or vicuna_v1 (default: detected)."
)
@click.option(
    "--api-key", default=None, help="API key (backend openai; else from the environment)."
)
@output_folder_option(
    "Folder for the VLM's views, expert overlays, label maps and results (default: a "
    "new run folder chat-TIME under $MEDM3_DATA_DIR/chat, else the platform's user data "
    "folder, medm3/chat; never the current folder)."
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
@allow_gaps_option
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
    from medm3.agent import ChatSession
    from medm3.cli.backends import build_vlm

    _check_early(prompt, backend, mock_script)
    config = _agent_config(
        protocol=protocol,
        expert_list=expert_list,
        no_experts=no_experts,
        weights=weights,
        max_rounds=max_rounds,
        plane=plane,
        slice_index=slice_index,
        window=window,
        expert_device=expert_device,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        out_dir=out_dir or default_output_dir(),
        no_cache=no_cache,
    )
    loaded = _inputs(images, modality, series, mask, labels, quiet=as_json)
    if store:
        _check_store(prompt, loaded)
    vlm = build_vlm(
        backend,
        model,
        mock_script=mock_script,
        device=device,
        dtype=dtype,
        template=template,
        base_url=base_url,
        api_key=api_key,
    )
    session = ChatSession(vlm, loaded, config, on_event=_event_printer(as_json))
    if prompt is not None:
        _answer_once(session, prompt, loaded, backend=backend, store=store, as_json=as_json)
        return
    interactive(session, as_json, _stream)


def _check_early(prompt: str | None, backend: str, mock_script: Path | None) -> None:
    """Refuse an empty prompt and a misplaced or bad --mock-script before any work."""
    from medm3.cli.backends import check_mock_script

    if prompt is not None and not prompt.strip():
        raise InputError("the prompt is empty")
    check_mock_script(backend, mock_script)


def _inputs(
    images: tuple[str, ...],
    modality: str | None,
    series: str | None,
    mask: Path | None,
    labels: str | None,
    *,
    quiet: bool,
) -> Any:
    """The conversation's image(s), with the user's --mask/--labels when given."""
    loaded = _load_images(images, modality, series)
    if mask is not None or labels is not None:
        loaded = _with_mask(loaded, mask, labels, quiet)
    return loaded


def _agent_config(
    *,
    protocol: str | None,
    expert_list: str | None,
    no_experts: bool,
    weights: tuple[str, ...],
    max_new_tokens: int,
    temperature: float,
    out_dir: Path,
    no_cache: bool,
    expert_device: str | None,
    **view_and_rounds: Any,
) -> AgentConfig:
    """The agent's settings from chat's options (protocol, experts and weights checked)."""
    from medm3.agent import AgentConfig
    from medm3.cli.options import parse_weights
    from medm3.vlm.base import GenerationConfig

    if protocol is not None:
        from medm3.agent.protocol import get_protocol

        protocol = get_protocol(protocol).name
    experts = None
    if expert_list:
        from medm3.experts.registry import get_expert_class

        names = [n.strip() for n in expert_list.split(",") if n.strip()]
        experts = tuple(get_expert_class(n).name for n in names)
    return AgentConfig(
        experts=experts,
        use_experts=not no_experts,
        device=expert_device,
        generation=GenerationConfig(max_new_tokens=max_new_tokens, temperature=temperature),
        output_dir=out_dir,
        use_cache=not no_cache,
        protocol=protocol,
        weights=parse_weights(weights),
        **view_and_rounds,
    )


def _stream(piece: str) -> None:
    click.echo(piece, nl=False)
    sys.stdout.flush()


def _answer_once(
    session: Any, prompt: str, loaded: Any, *, backend: str, store: bool, as_json: bool
) -> None:
    """Answer PROMPT; print the JSON document, or the stored URLs and the files' folder."""
    reply = session.ask(prompt, on_text=None if as_json else _stream)
    model_id = session.backend.model_id
    stored = _store(reply, loaded, model_id, prompt) if store else []
    out_dir = session.config.output_dir
    if not as_json:
        click.echo()
        for url in stored:
            click.echo(f"stored {url}", err=True)
        say_where(out_dir)
        return
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


def default_output_dir() -> Path:
    """A new run folder for a chat's files, never in the current folder.

    ``$MEDM3_DATA_DIR/chat/chat-TIME`` when that variable is set (as for
    ``m3 serve``), else ``<platform user data folder>/medm3/chat/chat-TIME``
    (``~/.local/share/medm3/chat/...`` on Linux). Nothing is created here; a
    second run in the same second gets ``-2``, ``-3`` ...
    """
    from medm3.utils.paths import data_root

    base = data_root() / "chat" / time.strftime("chat-%Y%m%d-%H%M%S")
    folder, n = base, 1
    while folder.exists():
        n += 1
        folder = base.with_name(f"{base.name}-{n}")
    return folder


def _with_mask(loaded: Any, mask: Path | None, labels: str | None, quiet: bool) -> Any:
    """Add the user's label map (``mask``, with label names) to a single image."""
    from medm3.imaging.io import load_image
    from medm3.imaging.user_mask import name_mask

    if mask is None:
        raise InputError("--labels names the labels of --mask; give --mask too")
    if loaded is None or isinstance(loaded, dict):
        raise InputError("--mask goes with one --image (the scan it labels)")
    label_map, note = name_mask(loaded, load_image(mask), labels)
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
