"""`m3 train CONFIG.yaml`: fine-tune VILA-M3 or a transformers VLM on LLaVA JSON.

The config (see ``configs/train/*.yaml`` and :mod:`medm3.train.config`) names
the base model, the data, what trains (full / LoRA, frozen parts) and the
loop; ``--set section.key=value`` overrides single keys. A bad config is one
line on stderr and exit 2, before any model loads. Multi-GPU and multi-node
runs go through accelerate::

    accelerate launch --config_file configs/accelerate/deepspeed_zero3.yaml \\
        -m medm3.cli.main train configs/train/vila_m3_full.yaml
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("train")
@click.argument("config_file", metavar="CONFIG.yaml", type=click.Path(path_type=Path))
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config key, e.g. --set train.max_steps=100 (value parsed as YAML).",
)
@click.option(
    "--dry-run", is_flag=True, help="Validate the config and the data, print the plan, and stop."
)
@click.option(
    "--no-progress", is_flag=True, help="No progress bar (the JSON log is still written)."
)
def train(config_file: Path, overrides: tuple[str, ...], dry_run: bool, no_progress: bool) -> None:
    """Fine-tune a VLM on LLaVA JSON conversations (loss on the answers only).

    Checkpoints go to train.output_dir every train.save_steps steps; rerunning
    with train.resume=auto continues from the newest one. The final model is
    exported to OUTPUT_DIR/final, loadable with `m3 chat --model DIR` (vila) or
    `m3 chat --backend hf --model DIR` (hf).
    """
    from medm3.train.config import dump_config, load_config

    config = load_config(config_file, overrides)
    if dry_run:
        from medm3.train.checkpoints import resume_from
        from medm3.train.dataset import read_samples

        samples = read_samples(config.data.train, config.data.image_folder)
        images = sum(len(s.images) for s in samples)
        resume = resume_from(Path(config.train.output_dir), config.train.resume)
        click.echo(dump_config(config), nl=False)
        click.echo(f"# {len(samples)} conversations, {images} images", err=True)
        click.echo(f"# resume from: {resume or 'the base model'}", err=True)
        return
    from medm3.train.trainer import train as run

    result = run(config, progress=not no_progress)
    if not result.main_process:
        return
    loss = "" if result.last_loss is None else f", last loss {result.last_loss:.4f}"
    click.echo(f"trained {result.steps} steps{loss}; log {result.log_path}", err=True)
    if result.export_dir is not None:
        click.echo(str(result.export_dir))
