"""`m3 demo`: one full expert-calling conversation offline, on random-weight models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from medm3.cli.options import output_folder_option


def _short(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show_step(step: dict[str, Any]) -> None:
    kind = step["step"]
    if kind == "question":
        click.echo(f"\nuser> {step['text']}")
    elif kind == "generate":
        sent = step["input"]
        images = sum(m.get("images", 0) for m in sent)
        click.echo(
            f"  [VLM call: {len(sent)} new message(s), {images} image(s), {step['seconds']:.2f} s]"
        )
        click.echo(f"model> {step['output']}")
    elif kind == "expert":
        click.echo(f"  [expert {step['trigger']} ran on the full CT in {step['seconds']:.1f} s]")
        click.echo(f"  expert result> {_short(step['result'].get('text', ''))}")
        for path in step["files"]:
            click.echo(f"  wrote {path}")
    elif kind == "expert_error":
        click.echo(f"  [expert call rejected: {step['message']}]")


@click.command("demo")
@output_folder_option("Folder for the overlay, label map and result (default: <cache>/output).")
@click.option(
    "--cache",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder for the random-weight demo models (default: $MEDM3_CACHE/demo).",
)
@click.option("--device", default="cpu", show_default=True, help="Device (cpu, cuda, mps).")
@click.option("--json", "as_json", is_flag=True, help="Print the answer and trace as JSON.")
def demo(out_dir: Path | None, cache: Path | None, device: str, as_json: bool) -> None:
    """Run one expert-calling conversation offline on the bundled sample CT.

    Builds a tiny random-weight VILA-M3 and VISTA3D once (a few MB in the cache),
    then runs the real loop: the VLM's reply is forced to <VISTA3D(liver)>, the
    real VISTA3D code segments the CT, the overlay is written and fed back, and
    the model answers. RANDOM WEIGHTS: the answers and masks are meaningless.
    """
    from medm3.demo import BANNER, default_cache, run_demo
    from medm3.sample_data import sample_ct

    cache = cache or default_cache()
    out_dir = out_dir or cache / "output"
    if not as_json:
        click.echo(f"*** {BANNER} ***", err=True)
        click.echo(f"sample CT: {sample_ct()} (TotalSegmentator test data, Apache-2.0)")
        click.echo(f"models:    tiny random-weight VILA-M3 and VISTA3D in {cache}")
    run = run_demo(out_dir, cache=cache, device=device, on_event=None if as_json else _show_step)
    if as_json:
        doc = {
            "note": BANNER,
            "answer": run.answer,
            "files": run.files,
            "overlays": run.overlays,
            "models": {k: str(v) for k, v in run.models.items()},
            "trace": run.trace,
        }
        click.echo(json.dumps(doc, indent=2, default=str))
        return
    click.echo(f"\noverlay: {', '.join(run.overlays) or '(none)'}")
    click.echo(f"*** {BANNER} ***", err=True)
    click.echo(
        "Next: `m3 chat --image YOUR_SCAN ...` with the released models "
        "(see README: Offline and local weights).",
        err=True,
    )
